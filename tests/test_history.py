"""The history checker of the fault tests, on synthetic histories: each anomaly is found, a clean
history is clean, several processes' files merge in time order, and a kill -9 loses no record
that was written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.history import HISTORY_DIR_ENV, History, HistoryRecorder, Record, read_history
from tests.support.history_check import OrderViolation, check_history
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
SECOND = 1_000_000_000


def at(seconds: float, kind: str, process: str = "p", **fields: object) -> Record:
    if "ids" in fields:
        fields["ids"] = tuple(fields["ids"])  # type: ignore[arg-type]
    return Record(kind=kind, t=round(seconds * SECOND), process=process, pid=1, **fields)  # type: ignore[arg-type]


def history(*records: Record) -> History:
    return History(records=tuple(sorted(records, key=lambda record: record.t)), torn=())


def published(event: str, key: str, seq: int, t: float) -> list[Record]:
    return [at(t, "attempt", "publisher", id=event, key=key, seq=seq), at(t + 0.01, "ack", "publisher", id=event)]


def handled(event: str, key: str, seq: int, t: float, process: str = "consumer-1") -> list[Record]:
    return [at(t, "invoke", process, id=event, key=key, seq=seq),
            at(t + 0.01, "handled", process, id=event, key=key, seq=seq),
            at(t + 0.02, "commit", process, ids=[event])]


def clean_run() -> list[Record]:
    """Two keys, three events each, published in order and handled in order by two consumers."""
    records: list[Record] = []
    for seq in range(3):
        records += published(f"a{seq}", "a", seq, 1 + seq)
        records += published(f"b{seq}", "b", seq, 1.5 + seq)
        records += handled(f"a{seq}", "a", seq, 1.2 + seq, "consumer-1")
        records += handled(f"b{seq}", "b", seq, 1.7 + seq, "consumer-2")
    return records


def test_a_clean_history_is_clean() -> None:
    report = check_history(history(*clean_run()))
    assert report.clean
    assert (report.attempted, report.acknowledged, report.failed, report.handled) == (6, 6, 0, 6)
    assert not (report.lost or report.duplicated or report.unexpected or report.recovered
                or report.order_violations or report.aborted_reads)


def test_an_acknowledged_event_never_handled_is_lost() -> None:
    report = check_history(history(*clean_run(), *published("a3", "a", 3, 9)))
    assert report.lost == ("a3",) and not report.clean


def test_an_event_whose_handler_died_before_its_side_effect_is_lost() -> None:
    crashed = [at(9.5, "invoke", "consumer-1", id="a3", key="a", seq=3)]  # kill -9 mid-handler, never redelivered
    report = check_history(history(*clean_run(), *published("a3", "a", 3, 9), *crashed))
    assert report.lost == ("a3",)


def test_a_side_effect_committed_twice_is_duplicated_but_a_skipped_redelivery_is_not() -> None:
    twice = handled("a1", "a", 1, 8, "consumer-3")  # a second consumer applied it again
    skipped = [at(8.5, "invoke", "consumer-3", id="b1", key="b", seq=1)]  # dedup store: invoked, no effect
    report = check_history(history(*clean_run(), *twice, *skipped))
    assert report.duplicated == {"a1": 2}
    assert report.redelivered == 2  # a1 and b1 reached a handler twice
    assert not report.order_violations, "handling a1 again is a redelivery, not an order violation"
    assert not report.clean


def test_an_event_nobody_published_is_unexpected() -> None:
    report = check_history(history(*clean_run(), *handled("ghost", "a", 9, 9)))
    assert report.unexpected == ("ghost",) and not report.clean


def test_an_event_handled_although_its_publish_failed_is_recovered_not_an_error() -> None:
    unconfirmed = [at(9, "attempt", "publisher", id="a3", key="a", seq=3),
                   at(9.2, "fail", "publisher", id="a3", error="connection lost, confirm outstanding")]
    report = check_history(history(*clean_run(), *unconfirmed, *handled("a3", "a", 3, 9.5)))
    assert report.recovered == ("a3",)
    assert report.failed == 1  # reported failed, never acknowledged: yet the broker had it
    assert report.clean


def test_an_event_handled_before_an_earlier_one_of_its_key_is_an_order_violation() -> None:
    records = [*published("a0", "a", 0, 1), *published("a1", "a", 1, 1.1), *published("b0", "b", 0, 1.2),
               *handled("a1", "a", 1, 2), *handled("b0", "b", 0, 2.1), *handled("a0", "a", 0, 3, "consumer-2")]
    report = check_history(history(*records))
    assert report.order_violations == (OrderViolation(key="a", seq=0, after_seq=1, process="consumer-2"),)
    assert not report.lost and not report.clean


def test_a_read_of_an_aborted_transaction_is_an_aborted_read() -> None:
    aborted = [at(9, "attempt", "publisher", id="a3", key="a", seq=3, attempt="tx7-a3"),
               at(9.1, "aborted", "publisher", id="a3", attempt="tx7-a3"),
               # The same event published again in a committed transaction: that copy may be read.
               at(9.2, "attempt", "publisher", id="a3", key="a", seq=3, attempt="tx8-a3"),
               at(9.3, "ack", "publisher", id="a3", attempt="tx8-a3")]
    legitimate = [at(9.5, "handled", "consumer-1", id="a3", key="a", seq=3, attempt="tx8-a3")]
    report = check_history(history(*clean_run(), *aborted, *legitimate))
    assert report.aborted_reads == () and report.clean
    read_aborted = [at(9.6, "invoke", "consumer-2", id="a3", key="a", seq=3, attempt="tx7-a3")]
    assert check_history(history(*clean_run(), *aborted, *legitimate, *read_aborted)).aborted_reads == ("a3",)


def test_without_attempt_ids_an_aborted_event_never_acknowledged_that_is_read_is_an_aborted_read() -> None:
    aborted = [at(9, "attempt", "publisher", id="x", key="a", seq=3), at(9.1, "aborted", "publisher", id="x")]
    report = check_history(history(*clean_run(), *aborted, *handled("x", "a", 3, 9.5)))
    assert report.aborted_reads == ("x",)


def test_recovery_time_is_the_longest_handling_pause_overlapping_each_fault() -> None:
    records: list[Record] = []
    moments = [1, 2, 3, 4, 12, 13, 14, 20, 27, 28]  # pauses: 8 s around the kill, 6 and 7 s around the pause
    for index, moment in enumerate(moments):
        records += published(f"e{index}", "k", index, moment - 0.5)
        records += handled(f"e{index}", "k", index, moment - 0.01)
    records += [at(4.5, "fault", "test", name="kill kafka-2", phase="start"),
                at(15, "fault", "test", name="pause kafka-1", phase="start"),
                at(25, "fault", "test", name="pause kafka-1", phase="end")]
    report = check_history(history(*records))
    assert [(fault.name, round(fault.recovery or 0, 1)) for fault in report.faults] == [
        ("kill kafka-2", 8.0), ("pause kafka-1", 7.0)]
    assert round(report.max_recovery or 0, 1) == 8.0
    late = [at(30, "fault", "test", name="kill rabbit-1", phase="start")]  # nothing handled after it
    assert check_history(history(*records, *late)).faults[-1].recovery is None


def test_the_summary_names_faults_counts_and_offenders() -> None:
    records = [*clean_run(), *published("lost-1", "a", 3, 9), *handled("a1", "a", 1, 9.5),
               at(5, "fault", "test", name="kill kafka-2", phase="start")]
    summary = check_history(history(*records)).summary()
    assert "1 fault(s) injected (kill kafka-2); 7 events published, 7 acknowledged, 0 failed; 6 handled" in summary
    assert "lost 1, duplicated 1, unexpected 0, recovered 0, order violations 0, aborted reads 0" in summary
    assert "lost: lost-1" in summary and "duplicated: a1 x2" in summary
    assert "max recovery time" in summary


def test_records_of_several_processes_merge_in_time_order(tmp_path: Path) -> None:
    publisher, consumer = HistoryRecorder(tmp_path, "publisher"), HistoryRecorder(tmp_path, "consumer")
    publisher.attempt("e1", "k", 0)
    publisher.ack("e1")
    consumer.invoke("e1", "k", 0)
    consumer.handled("e1", "k", 0)
    consumer.commit(["e1"])
    publisher.close()
    consumer.close()
    merged = read_history(tmp_path)
    assert [record.kind for record in merged.records] == ["attempt", "ack", "invoke", "handled", "commit"]
    assert merged.records[-1].ids == ("e1",)
    assert check_history(merged).clean


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    with HistoryRecorder(tmp_path, "publisher") as recorder:
        recorder.attempt("e1", "k", 0)
    with open(recorder.path, "a") as file:
        file.write('{"kind":"ack","id":"e1","t":1')  # cut mid-record
    merged = read_history(tmp_path)
    assert len(merged.records) == 1 and merged.torn == (f"{recorder.path.name}:2",)
    assert "torn" in check_history(merged).summary()


WRITER = """
import sys
from tests.support.history import HistoryRecorder
recorder = HistoryRecorder.from_env("writer")
for seq in range(10**9):
    recorder.attempt(f"e{seq}", "k", seq)
"""


def test_a_process_killed_with_sigkill_leaves_only_whole_records(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HISTORY_DIR_ENV, str(tmp_path))
    writer = subprocess.Popen([sys.executable, "-c", WRITER], cwd=REPO_ROOT)
    try:
        wait_until(lambda: len(read_history(tmp_path).records) >= 2000, 60, "2000 records from the writer process",
                   interval=0.2)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    merged = read_history(tmp_path)
    assert merged.torn == ()
    assert [record.seq for record in merged.records] == list(range(len(merged.records)))
