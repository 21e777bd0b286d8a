"""Readiness and liveness of a `topo run` process, as answered by /readyz and /healthz.

Ready (`/readyz` 200): the process is connected to its broker and every consumer group it runs
has joined (received its first assignment, possibly empty: a Kafka member beyond the partition
count, or a waiting single-active consumer, is ready and idle). A publisher-only process is
ready once connected.

Healthy (`/healthz` 200) unless one of these holds:

* the runtime reported a fatal error (`RuntimeState.fail`);
* a group is stalled: it has events in flight (`topo_in_flight_events > 0`) and has recorded no
  progress (`topo_consumer_last_progress_timestamp_seconds`) for longer than its stall limit,
  by default the group's `alerts.stalled.for`. "Progress" is whatever the runtime records in
  that gauge: an event finished (handled, retried, dead-lettered or skipped as duplicate).

An idle consumer (nothing in flight) is healthy however long ago it last handled an event; a
consumer whose broker holds events it never fetches is the lag monitor's business
(`topo_consumergroup_stalled`), since only the broker knows about work not yet fetched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from topo.core.metric_names import IN_FLIGHT, LAST_PROGRESS
from topo.runtime.metrics import RuntimeMetrics


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]
    details: dict[str, object]


class RuntimeState:
    """What the runtime tells the HTTP endpoints; every method is thread-safe."""

    def __init__(self, groups: Iterable[str] = (), *, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._groups = tuple(groups)
        self._connected = False
        self._assigned: dict[str, int] = {}
        self._failure: str | None = None
        self._store_down: dict[str, str] = {}  # group -> why its processed store is unavailable
        self._clock = clock

    @property
    def groups(self) -> tuple[str, ...]:
        return self._groups

    def set_connected(self, connected: bool) -> None:
        """The broker connection is up (True) or lost (False)."""
        with self._lock:
            self._connected = connected

    def set_assignment(self, group: str, streams: int) -> None:
        """The group's member now owns `streams` partitions/queues (0 is a valid, idle member)."""
        with self._lock:
            self._assigned[group] = streams

    def clear_assignment(self, group: str) -> None:
        """The member left the group or is rebalancing: not ready until assigned again."""
        with self._lock:
            self._assigned.pop(group, None)

    def set_store(self, group: str, reason: str | None) -> None:
        """The group's processed store is unavailable (`reason`) or available again (None)."""
        with self._lock:
            if reason is None:
                self._store_down.pop(group, None)
            else:
                self._store_down[group] = reason

    def fail(self, reason: str) -> None:
        """A fatal error: /healthz answers 503 with `reason` from now on."""
        with self._lock:
            self._failure = reason

    def readiness(self) -> Verdict:
        with self._lock:
            reasons = []
            if not self._connected:
                reasons.append("not connected to the broker")
            reasons.extend(f"group {g} has no assignment yet" for g in self._groups if g not in self._assigned)
            reasons.extend(f"group {g}: processed store unavailable ({why}); nothing is acknowledged"
                           for g, why in sorted(self._store_down.items()))
            details: dict[str, object] = {"connected": self._connected,
                                          "assigned": {g: self._assigned.get(g) for g in self._groups},
                                          "store_unavailable": dict(self._store_down)}
        return Verdict(not reasons, tuple(reasons), details)

    def liveness(self, metrics: RuntimeMetrics | None, stall_after: Callable[[str], float]) -> Verdict:
        """Healthy unless failed or a group has work in flight and no progress for `stall_after(group)`."""
        with self._lock:
            failure = self._failure
        reasons = [f"fatal: {failure}"] if failure else []
        details: dict[str, object] = {}
        if metrics is not None:
            now = self._clock()
            for group in self._groups:
                series = {"topology": metrics.topology.name, "group": group}
                in_flight = metrics.registry.get_sample_value(IN_FLIGHT, series) or 0.0
                last = metrics.registry.get_sample_value(LAST_PROGRESS, series)
                idle_for = now - last if last is not None else None
                details[group] = {"in_flight": in_flight, "seconds_since_progress": idle_for}
                limit = stall_after(group)
                if in_flight > 0 and idle_for is not None and idle_for > limit:
                    reasons.append(f"group {group} stalled: {in_flight:.0f} events in flight and no progress "
                                   f"for {idle_for:.0f}s (limit {limit:g}s)")
        return Verdict(not reasons, tuple(reasons), details)
