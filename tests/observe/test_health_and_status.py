"""The runtime's /healthz, /readyz and /metrics, and the monitor's slow/stalled judgement (no broker)."""

from __future__ import annotations

from collections import deque

import requests
from prometheus_client import CollectorRegistry

from topo.core.model import Topology
from topo.generator.resolve import resolve
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.exporter import LagCollector
from topo.runtime.observe.health import RuntimeState
from topo.runtime.observe.lag import KIND_EVENTS, GroupLag, Snapshot, StreamLag, _PublishHistory
from topo.runtime.observe.server import process_port, serve_runtime
from topo.runtime.observe.status import ProgressTracker, is_slow, is_stalled, window_samples

from .support import GROUP, document, metric_names, scrape


def small() -> Topology:
    return resolve(document("healthcheck", stalled_for="10s", lag_for="5s"))


def test_endpoints_follow_the_runtime_state() -> None:
    topology = small()
    metrics = RuntimeMetrics(topology)
    metrics.init_group(topology.group(GROUP))
    state = RuntimeState([GROUP])
    server = serve_runtime(metrics, state, port=0, host="127.0.0.1", stall_after={GROUP: 0.5})
    try:
        url = server.url
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 503 and "not connected" in ready.text
        state.set_connected(True)
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503  # joined no group yet
        state.set_assignment(GROUP, 0)  # an idle member (more members than partitions) is ready
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200

        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        # Work in flight and the last progress older than the limit: stalled.
        metrics.in_flight.labels(GROUP).set(3)
        metrics.last_progress.labels(GROUP).set(0)
        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 503 and f"group {GROUP} stalled" in health.json()["reasons"][0]
        # Idle (nothing in flight) is healthy however old the last progress.
        metrics.in_flight.labels(GROUP).set(0)
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        state.fail("broker authentication failed")
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 503

        names = metric_names(scrape(f"{url}/metrics"))
        assert {"topo_events_consumed_total", "topo_event_latency_seconds_bucket", "topo_in_flight_events",
                "topo_consumer_last_progress_timestamp_seconds"} <= names
        assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    finally:
        server.stop()


def test_process_ports() -> None:
    assert process_port(9100, 0) == 9100 and process_port(9100, 3) == 9103
    assert process_port(0, 5) == 0


def stream(position: int | None, lag: int) -> StreamLag:
    return StreamLag("t", 0, KIND_EVENTS, "e", "1", position, (position or 0) + lag, lag, 0.0)


def snapshot(at: float, position: int | None, lag: int) -> Snapshot:
    group = GroupLag(GROUP, "kafka", "id", 1, "stable", (stream(position, lag),), 0, "dlq")
    return Snapshot(at, "kafka", (group,))


def test_every_monitor_series_carries_the_topology_label() -> None:
    collector = LagCollector("explorer")
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(snapshot(1.0, 100, 5), ProgressTracker(small()).observe(snapshot(1.0, 100, 5)), 0.1)
    samples = [sample for family in registry.collect() for sample in family.samples]
    assert {sample.name for sample in samples} >= {"topo_lag_monitor_up", "kafka_consumergroup_group_lag",
                                                    "topo_consumergroup_dead_letter_events"}
    assert all(sample.labels.get("topology") == "explorer" for sample in samples)
    lag = next(s for s in samples if s.name == "kafka_consumergroup_group_lag")
    assert lag.labels == {"topology": "explorer", "group": GROUP, "topic": "t", "partition": "0",
                          "event_type": "e", "chain_id": "1"} and lag.value == 5


def test_stalled_needs_lag_and_no_progress_over_the_whole_window() -> None:
    tracker = ProgressTracker(small())  # stalled.for 10s, consumer_lag.for 5s
    statuses = [tracker.observe(snapshot(t, 100, 50))[GROUP] for t in range(0, 12)]
    assert not any(s.stalled for s in statuses[:10])  # the history does not span 10s yet
    assert statuses[10].stalled and statuses[11].stalled
    assert not tracker.observe(snapshot(12, 101, 50))[GROUP].stalled  # it moved: no longer stalled


def test_slow_is_progress_with_a_lag_that_never_falls() -> None:
    tracker = ProgressTracker(small())
    labels = [tracker.observe(snapshot(t, 100 + t, 50 + t))[GROUP].label for t in range(0, 7)]
    assert labels[:5] == ["ok"] * 5 and labels[5:] == ["slow", "slow"]
    assert tracker.observe(snapshot(7, 120, 10))[GROUP].label == "ok"  # lag fell: catching up


def test_window_helpers() -> None:
    history: deque[tuple[float, int, int]] = deque([(0, 1, 5), (5, 1, 5), (10, 1, 5)])
    assert window_samples(history, 10, 20) is None
    assert window_samples(history, 10, 5) == [(5, 1, 5), (10, 1, 5)]
    assert is_stalled([(0, 1, 5), (5, 1, 5)]) and not is_stalled([(0, 1, 0), (5, 1, 5)])
    assert is_slow([(0, 1, 5), (5, 3, 5)]) and not is_slow([(0, 1, 5), (5, 3, 4)])


def test_rabbitmq_head_age_is_interpolated_from_the_publish_counter() -> None:
    history = _PublishHistory()
    for at, published in ((0.0, 0), (10.0, 100), (20.0, 300)):
        history.add(at, published, keep_seconds=1000)
    assert history.arrival(50) == (5.0, True)  # message 50 arrived halfway between 0s and 10s
    assert history.arrival(200) == (15.0, True)
    history = _PublishHistory()
    history.add(0.0, 500, 1000)
    history.add(10.0, 600, 1000)
    assert history.arrival(10) == (0.0, False)  # older than the history: a lower bound
    history.add(20.0, 5, 1000)  # the counter restarted: history dropped
    assert list(history.samples) == [(20.0, 5)]
