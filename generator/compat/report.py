"""Compare two resolved topologies: every change, its level per side, the exit code, the output,
and the payload changes an event's `compatibility:` level forbids (`topo validate --against`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topo.core.model import Compatibility, Topology
from topo.generator.compat.groups import group_changes, rabbit_changes, topology_changes
from topo.generator.compat.rules import PROTECTED, Change, Level, Side
from topo.generator.compat.topics import event_changes

# Exit codes of `topo diff` (docs/cli.md): the worst level found.
EXIT_CODES = {Level.SAFE: 0, Level.CARE: 2, Level.BREAKING: 3}
SIDE_TITLES = {Side.PRODUCERS: "producers (events new writers publish, read by old readers)",
               Side.CONSUMERS: "consumers (events old writers published, read by new readers)",
               Side.BROKERS: "brokers (topics, queues, groups, offsets, delivery)"}
LABEL_WIDTH = 12


@dataclass(frozen=True)
class Report:
    changes: tuple[Change, ...]

    @property
    def level(self) -> Level:
        return max((change.level for change in self.changes), default=Level.SAFE)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.level]

    def count(self, level: Level) -> int:
        return sum(1 for change in self.changes if change.level is level)

    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        return (f"{self.count(Level.BREAKING)} breaking, {self.count(Level.CARE)} need care, "
                f"{self.count(Level.SAFE)} safe")

    def lines(self) -> list[str]:
        lines: list[str] = []
        for side in Side:
            changes = [c for c in self.changes if c.side is side]
            if not changes:
                continue
            worst = max(c.level for c in changes)
            lines.append(f"{SIDE_TITLES[side]}: {worst.label}")
            for change in changes:
                lines.append(f"  {change.level.label:<{LABEL_WIDTH}}{change.subject}: {change.message} "
                             f"[{change.rule}]")
                if change.level is not Level.SAFE:
                    lines.append(f"  {'':<{LABEL_WIDTH}}fix: {change.fix}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level.label,
            "exit_code": self.exit_code,
            "counts": {level.label: self.count(level) for level in Level},
            "sides": {side.value: max((c.level for c in self.changes if c.side is side), default=Level.SAFE).label
                      for side in Side},
            "changes": [{"side": c.side.value, "level": c.level.label, "rule": c.rule, "subject": c.subject,
                         "event": c.event, "path": list(c.path), "message": c.message, "fix": c.fix}
                        for c in self.changes],
        }


def side_order(change: Change) -> tuple[int, int]:
    return (list(Side).index(change.side), -change.level)


def compare(old: Topology, new: Topology) -> Report:
    """Every change from `old` to `new`, grouped by side, the worst first within a side."""
    changes = [*event_changes(old, new), *group_changes(old, new), *rabbit_changes(old, new),
               *topology_changes(old, new)]
    return Report(tuple(sorted(changes, key=side_order)))


@dataclass(frozen=True)
class Violation:
    change: Change
    level: Compatibility  # the event's compatibility level the change breaks


def violations(report: Report, new: Topology) -> list[Violation]:
    """Breaking payload changes on a side the event's `compatibility:` level protects."""
    levels = {event.name: event.compatibility for event in new.events}
    found: list[Violation] = []
    for change in report.changes:
        if not change.payload or change.event not in levels or change.level is not Level.BREAKING:
            continue
        level = levels[change.event]
        if change.side in PROTECTED[level]:
            found.append(Violation(change, level))
    return found
