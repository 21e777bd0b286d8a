"""The lag monitor's Prometheus metrics: names follow kafka-lag-exporter where one applies.

Every series carries a `topology` label (the topology's name), as the runtime's do.

The collector exposes the latest snapshot only, so series of a group or stream that disappears
vanish with it. Every name here is listed in docs/observability.md and used by the generated
rules and dashboards (tests/observe checks both directions).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from topo.core.metric_names import (
    GROUP_DEAD_LETTERS,
    GROUP_MEMBERS,
    GROUP_SLOW,
    GROUP_STALLED,
    KAFKA_GROUP_LAG,
    KAFKA_GROUP_LAG_SECONDS,
    KAFKA_GROUP_MAX_LAG,
    KAFKA_GROUP_MAX_LAG_SECONDS,
    KAFKA_GROUP_OFFSET,
    KAFKA_GROUP_SUM_LAG,
    KAFKA_GROUP_TOPIC_SUM_LAG,
    KAFKA_LATEST_OFFSET,
    MONITOR_ERRORS,
    MONITOR_LAST_POLL,
    MONITOR_POLL_SECONDS,
    MONITOR_UP,
    RABBIT_QUEUE_CONSUMERS,
    RABBIT_QUEUE_LAG,
    RABBIT_QUEUE_LAG_SECONDS,
    RABBIT_QUEUE_READY,
    RABBIT_QUEUE_UNACKED,
)
from topo.runtime.observe.lag import KIND_EVENTS, Snapshot
from topo.runtime.observe.status import GroupStatus

TOPOLOGY_LABEL = "topology"
KAFKA_STREAM_LABELS = ["group", "topic", "partition", "event_type", "chain_id"]
RABBIT_STREAM_LABELS = ["group", "queue", "kind"]
Rows = list[tuple[list[str], float]]


class LagCollector(Collector):
    """Thread-safe holder of the monitor's latest poll, collected on each scrape."""

    def __init__(self, topology_name: str) -> None:
        self.topology_name = topology_name
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._statuses: dict[str, GroupStatus] = {}
        self._up = 0.0
        self._poll_seconds = 0.0
        self._last_poll = 0.0
        self._errors = 0

    def update(self, snapshot: Snapshot, statuses: dict[str, GroupStatus], poll_seconds: float) -> None:
        with self._lock:
            self._snapshot, self._statuses = snapshot, dict(statuses)
            self._up, self._poll_seconds, self._last_poll = 1.0, poll_seconds, snapshot.taken_at

    def failed(self, at: float) -> None:
        """A poll failed: `up` drops to 0 and the previous lag series are withdrawn, not kept stale."""
        with self._lock:
            self._snapshot, self._statuses, self._up, self._last_poll = None, {}, 0.0, at
            self._errors += 1

    def healthy_since(self) -> tuple[bool, float]:
        with self._lock:
            return self._up == 1.0, self._last_poll

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._lock:
            snapshot, statuses = self._snapshot, dict(self._statuses)
            up, poll_seconds, last_poll, errors = self._up, self._poll_seconds, self._last_poll, self._errors
        name = self.topology_name
        _gauge = partial(gauge, name)
        yield _gauge(MONITOR_UP, "1 when the last poll of the broker succeeded.", [], [([], up)])
        yield _gauge(MONITOR_POLL_SECONDS, "Duration of the last poll of the broker.", [], [([], poll_seconds)])
        yield _gauge(MONITOR_LAST_POLL, "Unix time of the last poll, successful or not.", [], [([], last_poll)])
        errors_family = CounterMetricFamily(MONITOR_ERRORS, "Polls of the broker that failed.",
                                            labels=[TOPOLOGY_LABEL])
        errors_family.add_metric([name], errors)
        yield errors_family
        if snapshot is None:
            return
        if snapshot.broker == "kafka":
            yield from _kafka_families(name, snapshot)
        else:
            yield from _rabbit_families(name, snapshot)
        groups = [g.group for g in snapshot.groups]
        yield _gauge(GROUP_MEMBERS, "Members of the group (RabbitMQ: most consumers on one of its work queues).",
                     ["group"], [([g.group], g.members) for g in snapshot.groups])
        yield _gauge(GROUP_DEAD_LETTERS, "Dead-lettered events not yet replayed (DLQ size).", ["group"],
                     [([g.group], g.dead_letters) for g in snapshot.groups])
        yield _gauge(GROUP_SLOW, "1 when the group consumes but its lag never fell over alerts.consumer_lag.for.",
                     ["group"], [([g], 1.0 if statuses.get(g) and statuses[g].slow else 0.0) for g in groups])
        yield _gauge(GROUP_STALLED, "1 when the group had lag and made no progress over alerts.stalled.for.",
                     ["group"], [([g], 1.0 if statuses.get(g) and statuses[g].stalled else 0.0) for g in groups])


def gauge(topology: str, name: str, documentation: str, labels: list[str], rows: Rows) -> GaugeMetricFamily:
    """A gauge family whose every sample has `topology` as its first label."""
    family = GaugeMetricFamily(name, documentation, labels=[TOPOLOGY_LABEL, *labels])
    for values, value in rows:
        family.add_metric([topology, *values], value)
    return family


def _kafka_families(topology: str, snapshot: Snapshot) -> Iterator[GaugeMetricFamily]:
    _gauge = partial(gauge, topology)
    lag: Rows = []
    seconds: Rows = []
    offset: Rows = []
    latest: Rows = []
    max_lag: Rows = []
    max_seconds: Rows = []
    sum_lag: Rows = []
    topic_sum: Rows = []
    latest_seen: set[tuple[str, int]] = set()
    for group in snapshot.groups:
        topic_totals: dict[tuple[str, str, str], int] = {}
        for s in group.streams:
            labels = [group.group, s.topic, str(s.partition), s.event_type, s.chain_id]
            lag.append((labels, float(s.lag)))
            if s.lag_seconds is not None:
                seconds.append((labels, s.lag_seconds))
            if s.position is not None:
                offset.append((labels, float(s.position)))
            if (s.topic, s.partition) not in latest_seen:
                latest_seen.add((s.topic, s.partition))
                latest.append(([s.topic, str(s.partition)], float(s.end)))
            if s.kind == KIND_EVENTS:
                key = (s.topic, s.event_type, s.chain_id)
                topic_totals[key] = topic_totals.get(key, 0) + s.lag
        max_lag.append(([group.group], float(group.max_lag)))
        sum_lag.append(([group.group], float(group.sum_lag)))
        if group.max_lag_seconds is not None:
            max_seconds.append(([group.group], group.max_lag_seconds))
        topic_sum.extend(([group.group, t, e, c], float(v)) for (t, e, c), v in sorted(topic_totals.items()))
    yield _gauge(KAFKA_GROUP_LAG, "Events between the committed offset and the end of the partition.",
                 KAFKA_STREAM_LABELS, lag)
    yield _gauge(KAFKA_GROUP_LAG_SECONDS, "Age of the oldest unconsumed event of the partition.",
                 KAFKA_STREAM_LABELS, seconds)
    yield _gauge(KAFKA_GROUP_OFFSET, "Committed offset of the group on the partition.", KAFKA_STREAM_LABELS,
                 offset)
    yield _gauge(KAFKA_LATEST_OFFSET, "High watermark of the partition.", ["topic", "partition"], latest)
    yield _gauge(KAFKA_GROUP_MAX_LAG, "Largest lag of the group's event partitions.", ["group"], max_lag)
    yield _gauge(KAFKA_GROUP_MAX_LAG_SECONDS, "Largest lag in seconds of the group's event partitions.",
                 ["group"], max_seconds)
    yield _gauge(KAFKA_GROUP_SUM_LAG, "Lag of the group over its event partitions.", ["group"], sum_lag)
    yield _gauge(KAFKA_GROUP_TOPIC_SUM_LAG, "Lag of the group per event topic.",
                 ["group", "topic", "event_type", "chain_id"], topic_sum)


def _rabbit_families(topology: str, snapshot: Snapshot) -> Iterator[GaugeMetricFamily]:
    _gauge = partial(gauge, topology)
    lag: Rows = []
    seconds: Rows = []
    ready: Rows = []
    unacked: Rows = []
    consumers: Rows = []
    for group in snapshot.groups:
        for s in group.streams:
            labels = [group.group, s.topic, s.kind]
            lag.append((labels, float(s.lag)))
            ready.append((labels, float(s.ready or 0)))
            unacked.append((labels, float(s.unacked or 0)))
            consumers.append((labels, float(s.consumers or 0)))
            if s.lag_seconds is not None:
                seconds.append((labels, s.lag_seconds))
    yield _gauge(RABBIT_QUEUE_LAG, "Messages in the queue (ready + unacknowledged).", RABBIT_STREAM_LABELS, lag)
    yield _gauge(RABBIT_QUEUE_LAG_SECONDS, "Estimated age of the queue's head message.", RABBIT_STREAM_LABELS,
                 seconds)
    yield _gauge(RABBIT_QUEUE_READY, "Messages ready for delivery.", RABBIT_STREAM_LABELS, ready)
    yield _gauge(RABBIT_QUEUE_UNACKED, "Messages delivered and not yet acknowledged.", RABBIT_STREAM_LABELS,
                 unacked)
    yield _gauge(RABBIT_QUEUE_CONSUMERS, "Consumers on the queue (waiting single-active consumers included).",
                 RABBIT_STREAM_LABELS, consumers)


# Every series name the monitor can expose (the counter with its _total suffix).
EXPORTED_NAMES: frozenset[str] = frozenset({
    KAFKA_GROUP_LAG, KAFKA_GROUP_LAG_SECONDS, KAFKA_GROUP_OFFSET, KAFKA_LATEST_OFFSET, KAFKA_GROUP_MAX_LAG,
    KAFKA_GROUP_MAX_LAG_SECONDS, KAFKA_GROUP_SUM_LAG, KAFKA_GROUP_TOPIC_SUM_LAG, RABBIT_QUEUE_LAG,
    RABBIT_QUEUE_LAG_SECONDS, RABBIT_QUEUE_READY, RABBIT_QUEUE_UNACKED, RABBIT_QUEUE_CONSUMERS, GROUP_MEMBERS,
    GROUP_SLOW, GROUP_STALLED, GROUP_DEAD_LETTERS, MONITOR_UP, MONITOR_POLL_SECONDS, MONITOR_LAST_POLL,
    MONITOR_ERRORS + "_total",
})
