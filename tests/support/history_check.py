"""What a fault test's history says: lost, duplicated, unexpected, recovered, out of order, aborted reads.

Definitions (over the records of :mod:`tests.support.history`, matched by event id):

* **lost** — acknowledged by the broker, never handled (no ``handled`` record);
* **duplicated** — handled (side effect committed) more than once; redelivery to a handler that
  then skips the event through a shared dedup store is not a duplicate, only ``handled`` counts;
* **unexpected** — invoked or handled, never attempted by any publisher;
* **recovered** — handled although its publish was never acknowledged (failed or outcome unknown:
  the broker had it after all); not an error, reported;
* **order violation** — within one key, an acknowledged event handled for the first time after an
  event of a higher ``seq`` was first handled (redelivering a prefix again is not a violation);
* **aborted read** — an exactly-once group handled a message of an aborted transaction: its
  ``attempt`` is recorded ``aborted`` (or, without attempt ids, its event id was aborted and
  never acknowledged);
* **recovery time** of a fault — the longest pause between two consecutive ``handled`` records
  that overlaps the fault (from its ``start`` to its ``end``; a kill has only a start).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable

from tests.support.history import History, Record

SHOWN = 5  # offenders listed per anomaly in the summary


@dataclasses.dataclass(frozen=True)
class OrderViolation:
    key: str
    seq: int  # handled for the first time ...
    after_seq: int  # ... after this higher seq of the same key
    process: str


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    name: str
    start: float  # seconds (wall clock)
    end: float
    recovery: float | None  # longest handling pause overlapping the fault; None: handling never resumed


@dataclasses.dataclass(frozen=True)
class HistoryReport:
    attempted: int  # distinct event ids
    acknowledged: int
    failed: int  # reported failed and never acknowledged
    handled: int  # distinct event ids with a committed side effect
    redelivered: int  # event ids whose handler was invoked more than once (expected under faults)
    lost: tuple[str, ...]
    duplicated: dict[str, int]  # event id -> times handled
    unexpected: tuple[str, ...]
    recovered: tuple[str, ...]
    order_violations: tuple[OrderViolation, ...]
    aborted_reads: tuple[str, ...]
    faults: tuple[FaultWindow, ...]
    torn: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """No lost, duplicated, unexpected or out-of-order event and no aborted read."""
        return not (self.lost or self.duplicated or self.unexpected or self.order_violations or self.aborted_reads)

    @property
    def max_recovery(self) -> float | None:
        times = [fault.recovery for fault in self.faults if fault.recovery is not None]
        return max(times) if times else None

    def summary(self) -> str:
        """A few lines for a test's output: faults, events published, each anomaly, recovery times."""
        faults = ", ".join(fault.name for fault in self.faults) or "none"
        lines = [
            f"history: {len(self.faults)} fault(s) injected ({faults}); {self.attempted} events published, "
            f"{self.acknowledged} acknowledged, {self.failed} failed; {self.handled} handled, "
            f"{self.redelivered} redelivered",
            f"  lost {len(self.lost)}, duplicated {len(self.duplicated)}, unexpected {len(self.unexpected)}, "
            f"recovered {len(self.recovered)}, order violations {len(self.order_violations)}, "
            f"aborted reads {len(self.aborted_reads)}",
        ]
        for fault in self.faults:
            took = "never" if fault.recovery is None else f"{fault.recovery:.1f}s"
            lines.append(f"  fault {fault.name}: lasted {fault.end - fault.start:.1f}s, recovery {took}")
        if self.faults:
            longest = self.max_recovery
            lines.append("  max recovery time " + ("never" if longest is None else f"{longest:.1f}s"))
        offenders = {
            "lost": list(self.lost),
            "duplicated": [f"{event} x{count}" for event, count in self.duplicated.items()],
            "unexpected": list(self.unexpected),
            "order violations": [f"key {v.key}: seq {v.seq} after {v.after_seq} ({v.process})"
                                 for v in self.order_violations],
            "aborted reads": list(self.aborted_reads),
        }
        for what, items in offenders.items():
            if items:
                more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
                lines.append(f"  {what}: {', '.join(items[:SHOWN])}{more}")
        if self.torn:
            lines.append(f"  {len(self.torn)} torn line(s) skipped: {', '.join(self.torn[:SHOWN])}")
        return "\n".join(lines)


def _ids(records: Iterable[Record]) -> set[str]:
    return {record.id for record in records if record.id is not None}


def lost_events(history: History) -> list[str]:
    handled = _ids(history.of("handled"))
    return sorted(_ids(history.of("ack")) - handled)


def duplicated_effects(history: History) -> dict[str, int]:
    counts = Counter(record.id for record in history.of("handled") if record.id is not None)
    return {event: count for event, count in sorted(counts.items()) if count > 1}


def unexpected_events(history: History) -> list[str]:
    return sorted(_ids(history.of("invoke", "handled")) - _ids(history.of("attempt")))


def recovered_events(history: History) -> list[str]:
    attempted_unacknowledged = _ids(history.of("attempt")) - _ids(history.of("ack"))
    return sorted(attempted_unacknowledged & _ids(history.of("handled")))


def order_violations(history: History) -> list[OrderViolation]:
    acknowledged = _ids(history.of("ack"))
    seen: set[str] = set()
    highest: dict[str, int] = {}
    violations = []
    for record in history.of("handled"):
        if record.id is None or record.key is None or record.seq is None or record.id not in acknowledged:
            continue
        if record.id in seen:
            continue  # a redelivery: order is about first handling
        seen.add(record.id)
        top = highest.get(record.key)
        if top is not None and record.seq < top:
            violations.append(OrderViolation(record.key, record.seq, top, record.process))
        else:
            highest[record.key] = record.seq
    return violations


def aborted_reads(history: History) -> list[str]:
    aborted = list(history.of("aborted"))
    aborted_attempts = {record.attempt for record in aborted if record.attempt is not None}
    aborted_ids = _ids(aborted) - _ids(history.of("ack"))
    found = set()
    for record in history.of("invoke", "handled"):
        if record.id is None:
            continue
        if record.attempt is not None:
            if record.attempt in aborted_attempts:
                found.add(record.id)
        elif record.id in aborted_ids:
            found.add(record.id)
    return sorted(found)


def fault_windows(history: History) -> list[FaultWindow]:
    handled_times = sorted(record.seconds for record in history.of("handled"))
    gaps = list(itertools.pairwise(handled_times))
    open_faults: dict[str, list[float]] = defaultdict(list)
    windows: list[tuple[str, float, float]] = []
    for record in history.of("fault"):
        name = record.name or "fault"
        if record.phase == "end" and open_faults[name]:
            windows.append((name, open_faults[name].pop(0), record.seconds))
        else:
            open_faults[name].append(record.seconds)
    windows.extend((name, start, start) for name, starts in open_faults.items() for start in starts)
    result = []
    for name, start, end in sorted(windows, key=lambda window: window[1]):
        if not any(moment > end for moment in handled_times):
            result.append(FaultWindow(name, start, end, None))  # handling never resumed
            continue
        pauses = [after - before for before, after in gaps if before <= end and after >= start]
        if not any(moment <= start for moment in handled_times):  # nothing handled before: from the start
            pauses.append(min(moment for moment in handled_times if moment > start) - start)
        result.append(FaultWindow(name, start, end, max(pauses)))
    return result


def check_history(history: History) -> HistoryReport:
    attempted = _ids(history.of("attempt"))
    acknowledged = _ids(history.of("ack"))
    invocations = Counter(record.id for record in history.of("invoke") if record.id is not None)
    return HistoryReport(
        attempted=len(attempted),
        acknowledged=len(acknowledged),
        failed=len(_ids(history.of("fail")) - acknowledged),
        handled=len(_ids(history.of("handled"))),
        redelivered=sum(1 for count in invocations.values() if count > 1),
        lost=tuple(lost_events(history)),
        duplicated=duplicated_effects(history),
        unexpected=tuple(unexpected_events(history)),
        recovered=tuple(recovered_events(history)),
        order_violations=tuple(order_violations(history)),
        aborted_reads=tuple(aborted_reads(history)),
        faults=tuple(fault_windows(history)),
        torn=history.torn,
    )
