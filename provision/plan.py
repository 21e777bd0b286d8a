"""The plan: what differs between the topology and the live brokers, and what to do about it.

Exit codes (stable; CI gates on them): 0 nothing to apply, 2 changes pending, 3 changes that
cannot be made in place (they win over 2), 1 an error (bad input, broker unreachable).
Drift alone (things on the broker that the topology does not declare, which apply leaves alone
without --prune) is reported but keeps the exit code at 0.

`Plan.to_json()` is the `--json` output; its shape is versioned by `format`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSON_FORMAT = "topo-plan/1"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_IMPOSSIBLE = 3


class Action(StrEnum):
    CREATE = "create"  # missing on the broker
    UPDATE = "update"  # exists, differs, can be changed in place
    DELETE = "delete"  # owned, not in the topology, and --prune was given
    DRIFT = "drift"  # on the broker, not in the topology: reported, left alone
    IMPOSSIBLE = "impossible"  # differs and cannot be changed in place: see `procedure`


ACTION_ORDER = {action: index for index, action in enumerate(Action)}
ACTIONABLE = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE})


class Broker(StrEnum):
    KAFKA = "kafka"
    RABBITMQ = "rabbitmq"


@dataclass(frozen=True)
class Difference:
    field: str
    current: Any
    desired: Any

    def describe(self) -> str:
        def show(value: Any) -> str:
            return "(unset)" if value is None else str(value)

        return f"{self.field}: {show(self.current)} -> {show(self.desired)}"


@dataclass(frozen=True)
class Change:
    broker: Broker
    action: Action
    kind: str  # topic, topic-config, exchange, queue, binding
    name: str
    reason: str
    owned: bool = True
    differences: tuple[Difference, ...] = ()
    procedure: str | None = None  # for impossible changes: the safe way to get there
    # What the applier needs (a desired spec or a live resource); not part of the output.
    subject: Any = field(default=None, compare=False, repr=False)

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.broker.value, ACTION_ORDER[self.action], self.kind, self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "broker": self.broker.value,
            "action": self.action.value,
            "kind": self.kind,
            "name": self.name,
            "owned": self.owned,
            "reason": self.reason,
            "differences": [{"field": d.field, "current": d.current, "desired": d.desired}
                            for d in self.differences],
            "procedure": self.procedure,
        }


@dataclass(frozen=True)
class Plan:
    topology: str
    targets: dict[str, dict[str, str]]  # broker -> where it was read from (no credentials)
    changes: tuple[Change, ...]
    prune: bool = False

    @classmethod
    def build(cls, topology: str, targets: dict[str, dict[str, str]], changes: list[Change],
              prune: bool) -> Plan:
        return cls(topology, targets, tuple(sorted(changes, key=Change.sort_key)), prune)

    def counts(self) -> dict[str, int]:
        found = Counter(change.action for change in self.changes)
        return {action.value: found.get(action, 0) for action in Action}

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(change for change in self.changes if change.action in ACTIONABLE)

    @property
    def impossible(self) -> tuple[Change, ...]:
        return tuple(change for change in self.changes if change.action is Action.IMPOSSIBLE)

    @property
    def exit_code(self) -> int:
        if self.impossible:
            return EXIT_IMPOSSIBLE
        return EXIT_CHANGES if self.actionable else EXIT_OK

    def for_broker(self, broker: Broker) -> tuple[Change, ...]:
        return tuple(change for change in self.changes if change.broker is broker)

    def summary(self) -> str:
        counts = self.counts()
        if not self.actionable and not self.impossible:
            text = "No changes: the brokers match the topology."
        else:
            text = (f"Plan: {counts['create']} to create, {counts['update']} to update, "
                    f"{counts['delete']} to delete, {counts['impossible']} impossible.")
        if counts["drift"]:
            text += f" {counts['drift']} drift (on the broker, not in the topology; left alone)."
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "topology": self.topology,
            "targets": self.targets,
            "prune": self.prune,
            "summary": self.counts(),
            "exit_code": self.exit_code,
            "changes": [change.to_json() for change in self.changes],
        }
