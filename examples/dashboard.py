"""`make demo`'s live view: per consumer group, what its handler did and what the broker holds for it.

Handled, retries and dead letters come from the process's `RuntimeMetrics` (this run only); lag and
the dead letters waiting in the group's DLQ from the broker (`topo.runtime.observe.lag`, as `topo
lag` reads them); the last line is what the group's example handler logged or printed last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from topo.core.metric_names import CONSUMED, DEAD_LETTERED, PUBLISHED, RETRIED
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.lag import Snapshot


@dataclass
class GroupRow:
    group: str
    handled: float = 0.0
    per_second: float = 0.0
    retries: float = 0.0
    dead: float = 0.0
    lag: int | None = None
    waiting_in_dlq: int | None = None
    last_line: str = ""

    def plain(self) -> str:
        """One line per group for a terminal-less run (tests read it)."""
        return (f"demo: {self.group} handled={self.handled:.0f} rate={self.per_second:.1f}/s lag={_show(self.lag)} "
                f"retries={self.retries:.0f} dead_letters={self.dead:.0f} dlq={_show(self.waiting_in_dlq)}")


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)


def totals(metrics: RuntimeMetrics, name: str, label: str) -> dict[str, float]:
    """A counter's sum per value of `label` (e.g. per group)."""
    result: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == f"{name}_total" and label in sample.labels:
                key = sample.labels[label]
                result[key] = result.get(key, 0.0) + sample.value
    return result


class LastLines(logging.Handler):
    """The latest line logged under `examples.<group>`, per group (and printed lines, for one group)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.lines[record.name.removeprefix("examples.")] = record.getMessage()

    def printer(self, group: str) -> PrintedLines:
        return PrintedLines(self.lines, group)


class PrintedLines:
    """A text stream that keeps the last line written to it as `group`'s (notifications prints)."""

    def __init__(self, lines: dict[str, str], group: str) -> None:
        self.lines, self.group = lines, group

    def write(self, text: str) -> int:
        stripped = text.strip()
        if stripped:
            self.lines[self.group] = stripped.splitlines()[-1]
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


class Dashboard:
    """Rows of every group, refreshed from the metrics and the latest lag snapshot."""

    def __init__(self, title: str, groups: Sequence[str], metrics: RuntimeMetrics, last: LastLines) -> None:
        self.title, self.metrics, self.last = title, metrics, last
        self.rows = {group: GroupRow(group) for group in groups}
        self.snapshot: Snapshot | None = None
        self.published = 0.0
        self._previous: tuple[float, dict[str, float]] = (time.monotonic(), {})
        self._lock = threading.Lock()

    def take(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.snapshot = snapshot

    def refresh(self) -> list[GroupRow]:
        now = time.monotonic()
        handled = totals(self.metrics, CONSUMED, "group")
        retries = totals(self.metrics, RETRIED, "group")
        dead = totals(self.metrics, DEAD_LETTERED, "group")
        self.published = sum(totals(self.metrics, PUBLISHED, "event_type").values())
        then, before = self._previous
        with self._lock:
            lags = {g.group: g for g in self.snapshot.groups} if self.snapshot else {}
        for name, row in self.rows.items():
            row.handled, row.retries, row.dead = handled.get(name, 0.0), retries.get(name, 0.0), dead.get(name, 0.0)
            row.per_second = (row.handled - before.get(name, row.handled)) / max(now - then, 1e-6)
            if name in lags:
                row.lag, row.waiting_in_dlq = lags[name].sum_lag, lags[name].dead_letters
            row.last_line = self.last.lines.get(name, "")
        self._previous = (now, handled)
        return list(self.rows.values())

    def table(self) -> Table:
        rows = self.refresh()
        table = Table(title=f"{self.title}: {self.published:.0f} events published (Ctrl-C stops)",
                      title_justify="left", expand=True)
        for column in ("group", "handled", "per s", "lag", "retries", "dead", "in DLQ"):
            table.add_column(column, justify="left" if column == "group" else "right", no_wrap=True)
        table.add_column("last line of its handler", overflow="ellipsis", no_wrap=True, ratio=1)
        for row in rows:
            dead_style = "bold red" if row.dead else ""
            table.add_row(row.group, f"{row.handled:.0f}", f"{row.per_second:.1f}", _show(row.lag),
                          f"[yellow]{row.retries:.0f}[/]" if row.retries else "0",
                          f"[{dead_style}]{row.dead:.0f}[/]" if dead_style else "0",
                          _show(row.waiting_in_dlq), row.last_line)
        return table
