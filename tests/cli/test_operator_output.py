"""Operator output without a broker: `topo lag`'s tables (one row per group by default, every
stream with --partitions) and `topo dlq list`'s replayed marker and empty-list summary."""

from __future__ import annotations

import io
from collections.abc import Callable

from rich.console import Console

from tests.cli.support import small_doc
from topo.cli.dlq import empty_summary, listed_json
from topo.cli.observe import render_groups, render_partitions
from topo.generator.resolve import resolve
from topo.runtime.observe.lag import KIND_EVENTS, KIND_RETRY, GroupLag, Snapshot, StreamLag
from topo.runtime.transport.base import ReplayRecord
from topo.runtime.transport.memory import MemoryBroker, MemoryDeadLetters


def kafka_snapshot() -> Snapshot:
    def stream(topic: str, partition: int, kind: str, lag: int, seconds: float | None) -> StreamLag:
        event = "token.transfer" if kind == KIND_EVENTS else ""
        return StreamLag(topic, partition, kind, event, "1" if event else "", 10, 10 + lag, lag, seconds)

    busy = GroupLag("notifications", "kafka", "explorer.notifications", 2, "stable",
                    (*(stream("token.transfer.1", p, KIND_EVENTS, lag, 4.5 * lag) for p, lag in enumerate((3, 7, 0))),
                     stream("explorer.notifications.retry.1s", 0, KIND_RETRY, 5, 1.0)),
                    4, "explorer.notifications.dlq")
    idle = GroupLag("analytics", "kafka", "explorer.analytics", 0, "dead",
                    tuple(stream(f"block.new.{c}", p, KIND_EVENTS, 0, 0.0) for c in (1, 138) for p in range(3)),
                    0, "explorer.analytics.dlq", missing=("a", "b", "c", "d", "e"))
    return Snapshot(0.0, "kafka", (busy, idle))


def printed(render: Callable[[Snapshot, Console], None], snapshot: Snapshot) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    render(snapshot, console)
    return out.getvalue().splitlines()


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_the_default_table_has_one_row_per_group_with_its_totals() -> None:
    lines = printed(render_groups, kafka_snapshot())
    rows = {cells(line)[0]: cells(line) for line in lines if line.startswith("│")}
    assert set(rows) == {"notifications", "analytics"}
    # GROUP LAG MAX_LAG LAG_S RETRYING DEAD_LETTERS MEMBERS STATE; retry streams count apart from the lag.
    assert rows["notifications"] == ["notifications", "10", "7", "31.5", "5", "4", "2", "stable"]
    assert rows["analytics"] == ["analytics", "0", "0", "0.0", "0", "0", "0", "dead"]
    [missing] = [line for line in lines if "missing" in line]
    assert missing == ("analytics: 5 missing on the broker (a, b, c and 2 more); run `topo apply --broker kafka`")


def test_partitions_lists_every_stream() -> None:
    snapshot = kafka_snapshot()
    rows = [cells(line) for line in printed(render_partitions, snapshot) if line.startswith("│")]
    assert len(rows) == sum(len(g.streams) for g in snapshot.groups) == 10
    assert ["notifications", "explorer.notifications.retry.1s", "0", "retry", "", "10", "15", "5", "1.0"] in rows


def test_dlq_list_marks_replayed_letters_and_hides_them_by_default() -> None:
    group = resolve(small_doc("ops")).group("indexer")
    broker = MemoryBroker()
    broker.ensure(group.kafka.dlq_topic, 1)
    for number in range(5):
        broker.append(group.kafka.dlq_topic, "k", b'{"event_id": "%d"}' % number, {})
    reader = MemoryDeadLetters(broker, group)
    reader.done(reader.take(2, 0), "2026-01-01T00:00:00.000Z")
    reader.done(reader.take(1, 0), "2026-01-02T00:00:00.000Z")
    record = reader.replay_record()
    assert record.count == 3
    assert [letter.offset for letter in reader.browse(10, 0, replayed=False)] == [3, 4]
    entries = [listed_json(letter, record) for letter in reader.browse(10, 0)]
    marks = [(entry["replayed"], entry["replayed_at"]) for entry in entries]
    assert marks == [(True, "2026-01-01T00:00:00.000Z")] * 2 + [(True, "2026-01-02T00:00:00.000Z")] + [
        (False, None)] * 2
    assert empty_summary("indexer", record, show_all=False) == (
        "no dead letters for group indexer (3 replayed; --all to show them)")
    assert empty_summary("indexer", record, show_all=True) == "no dead letters for group indexer"
    # RabbitMQ acks replayed letters off the queue: nothing to mention.
    assert empty_summary("indexer", ReplayRecord(), show_all=False) == "no dead letters for group indexer"


def test_a_filtered_replay_leaves_the_letters_it_skipped_pending() -> None:
    """`topo dlq replay --event-id/--since` on a reader that keeps its letters (Kafka, memory): the
    selected letters are recorded as replayed ranges, the others stay pending, and the position moves
    only over letters replayed."""
    group = resolve(small_doc("ops")).group("indexer")
    broker = MemoryBroker()
    broker.ensure(group.kafka.dlq_topic, 1)
    for number in range(5):
        broker.append(group.kafka.dlq_topic, "k", b'{"event_id": "%d"}' % number, {})
    reader = MemoryDeadLetters(broker, group)
    reader.done([d for d in reader.take(10, 0) if d.offset in (1, 3)], "first")
    assert [letter.offset for letter in reader.take(10, 0)] == [0, 2, 4]
    assert reader.replay_record().positions == {}
    marks = [listed_json(letter, reader.replay_record())["replayed_at"] for letter in reader.browse(10, 0)]
    assert marks == [None, "first", None, "first", None]
    reader.done([d for d in reader.take(10, 0) if d.offset in (0, 2)], "second")
    assert reader.replay_record().positions == {0: 4}
    assert [letter.offset for letter in reader.take(10, 0)] == [4]
    marks = [listed_json(letter, reader.replay_record())["replayed_at"] for letter in reader.browse(10, 0)]
    assert marks == ["second", "first", "second", "first", None]
