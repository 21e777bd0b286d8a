"""Prometheus metrics of the runtime: the names the generated alert rules and dashboards use.

One `RuntimeMetrics` per process. Every series the topology implies for the process's role
(publisher: every event type and chain; a consumer group: its subscriptions) is created at zero
on start, so `increase()` and `rate()` work from the first event. Every series carries a
`topology` label (the topology's name), so two topologies with a group of the same name never
share a series; the generated rules and dashboards filter on it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from topo.core.metric_names import (
    CONSUMED,
    DEAD_LETTERED,
    DUPLICATES,
    FAILED,
    HANDLER_DURATION,
    IN_FLIGHT,
    LAST_PROGRESS,
    LATENCY,
    PAUSED_PARTITIONS,
    PUBLISH_FAILED,
    PUBLISHED,
    RETRIED,
)
from topo.core.model import ConsumerGroup, Topology

TOPOLOGY_LABEL = "topology"
EVENT_LABELS = (TOPOLOGY_LABEL, "event_type", "chain_id")
GROUP_LABELS = (TOPOLOGY_LABEL, "group", "event_type", "chain_id")
DEAD_LETTER_REASONS = ("max_retries", "poison")
# Handler durations: sub-millisecond handlers up to slow external calls.
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

Metric = TypeVar("Metric", Counter, Gauge, Histogram)


class OfTopology(Generic[Metric]):
    """A metric whose `topology` label is fixed: `labels(...)` takes the other labels only."""

    def __init__(self, metric: Metric, topology: str) -> None:
        self.metric: Metric = metric
        self.topology = topology

    def labels(self, *values: str) -> Metric:
        return self.metric.labels(self.topology, *values)


def latency_buckets(topology: Topology) -> tuple[float, ...]:
    """Standard buckets plus one at each lag-seconds alert threshold, so alerts are exact."""
    thresholds = {topology.alerts.lag_seconds, *(g.alerts.lag_seconds for g in topology.groups)}
    return tuple(sorted(set(LATENCY_BUCKETS) | thresholds))


class RuntimeMetrics:
    def __init__(self, topology: Topology, registry: CollectorRegistry | None = None) -> None:
        self.topology = topology
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        name = topology.name
        group_only = (TOPOLOGY_LABEL, "group")
        self.published = OfTopology(Counter(PUBLISHED, "Events acknowledged by the broker.", EVENT_LABELS,
                                            registry=r), name)
        self.publish_failed = OfTopology(Counter(PUBLISH_FAILED, "Events the broker refused or never acknowledged.",
                                                 EVENT_LABELS, registry=r), name)
        self.consumed = OfTopology(Counter(CONSUMED, "Events a group's handler processed successfully.",
                                           GROUP_LABELS, registry=r), name)
        self.failed = OfTopology(Counter(FAILED, "Handler attempts that raised.", GROUP_LABELS, registry=r), name)
        self.retried = OfTopology(Counter(RETRIED, "Retries scheduled after a failed attempt.", GROUP_LABELS,
                                          registry=r), name)
        self.dead_lettered = OfTopology(Counter(DEAD_LETTERED, "Events sent to the group's dead-letter queue.",
                                                (*GROUP_LABELS, "reason"), registry=r), name)
        self.duplicates = OfTopology(Counter(DUPLICATES, "Deliveries skipped because their event_id was processed.",
                                             GROUP_LABELS, registry=r), name)
        self.handler_duration = OfTopology(Histogram(HANDLER_DURATION, "Time spent in the handler per attempt.",
                                                     GROUP_LABELS, buckets=HANDLER_BUCKETS, registry=r), name)
        self.latency = OfTopology(Histogram(LATENCY, "Now minus the envelope timestamp when the handler succeeded.",
                                            GROUP_LABELS, buckets=latency_buckets(topology), registry=r), name)
        self.in_flight = OfTopology(Gauge(IN_FLIGHT, "Events fetched and not yet done.", group_only, registry=r),
                                    name)
        self.paused_partitions = OfTopology(Gauge(PAUSED_PARTITIONS, "Partitions or queues paused for backpressure.",
                                                  group_only, registry=r), name)
        self.last_progress = OfTopology(Gauge(LAST_PROGRESS, "Unix time the consume loop last made progress.",
                                              group_only, registry=r), name)

    def init_publisher(self) -> None:
        for event in self.topology.events:
            for topic in event.topics:
                labels = (event.name, str(topic.chain_id))
                self.published.labels(*labels)
                self.publish_failed.labels(*labels)

    def init_group(self, group: ConsumerGroup) -> None:
        for subscription in group.subscriptions:
            for chain_id in subscription.chains:
                labels = (group.name, subscription.event, str(chain_id))
                for metric in (self.consumed, self.failed, self.retried, self.duplicates,
                               self.handler_duration, self.latency):
                    metric.labels(*labels)
                for reason in DEAD_LETTER_REASONS:
                    self.dead_lettered.labels(*labels, reason)
        self.in_flight.labels(group.name).set(0)
        self.paused_partitions.labels(group.name).set(0)
        self.last_progress.labels(group.name).set_to_current_time()
