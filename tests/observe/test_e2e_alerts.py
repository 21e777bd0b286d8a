"""End to end on real Kafka and a real Prometheus: `topo run`, `topo monitor`, the generated rules.

One stack per module: a topology with a 1s `for:`, its topics applied, a `topo run` consumer and
a `topo monitor` on free ports, a publisher serving the runtime's metrics from this process, and
a Prometheus server scraping all three every second and evaluating the generated rules.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dev import brokers
from topo.generator.model import Topology
from topo.runtime.app import Runtime
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.health import RuntimeState
from topo.runtime.observe.server import ObservabilityServer, serve_runtime

from .support import (
    EVENT,
    GROUP,
    Process,
    compile_topology,
    document,
    environment,
    free_port,
    metric_names,
    names_in_expr,
    scrape,
    topo,
    total,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus]


@dataclass
class Stack:
    topology: Topology
    generated: Path
    env: dict[str, str]
    logs: Path
    run_port: int
    consumer: Process
    monitor_url: str
    publisher: Runtime
    publisher_server: ObservabilityServer
    prometheus: brokers.PrometheusServer
    seq: int = 0

    def start_consumer(self) -> None:
        self.consumer = Process.start(
            ["run", "--group", GROUP, "--topology", str(self.generated / "topology.json"), "--broker", "kafka",
             "--metrics-port", str(self.run_port), "--shutdown-timeout", "5"],
            self.env, self.logs / f"run-{uuid.uuid4().hex[:6]}.log")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{self.run_port}/readyz", timeout=2).status_code == 200,
                 60, "topo run to be ready")

    def publish(self, count: int, note: str | None = None) -> None:
        publisher = self.publisher.publisher()
        for _ in range(count):
            payload: dict[str, Any] = {"chain_id": 1, "item": f"item-{self.seq % 97}", "seq": self.seq}
            if note:
                payload["note"] = note
            publisher.publish(payload, event_type=EVENT)
            self.seq += 1
        assert publisher.flush(30) == 0

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        response = requests.get(f"{self.prometheus.url}/api/v1/alerts", timeout=10)
        response.raise_for_status()
        return [a for a in response.json()["data"]["alerts"]
                if a["labels"].get("alertname") == name and a["state"] == state
                and a["labels"].get("group") == GROUP]

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"]["result"])


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, kafka_admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not brokers.prometheus_binary():
        pytest.skip("the prometheus binary is not installed: make brokers-up")
    name = f"t-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("e2e")
    generated = root / "generated"
    topology = compile_topology(document(name, "kafka", lag_events=1000, lag_for="1s", failure_window="15s"),
                                generated)
    env = environment(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    applied = topo("apply", "-t", str(generated / "topology.json"), "--yes", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    started: list[Any] = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    try:
        monitor = Process.start(["monitor", "-t", str(generated / "topology.json"), "--port", "0", "--host",
                                 "127.0.0.1", "--interval", "1"], env, root / "monitor.log")
        started.append(monitor)
        monitor_url = monitor.wait_for_line(r"serving (http://127\.0\.0\.1:\d+)/metrics").group(1)
        metrics = RuntimeMetrics(topology)
        publisher = Runtime.from_generated(generated, broker="kafka", metrics=metrics)
        publisher.publisher()  # creates the publisher series at zero
        state = RuntimeState([])
        state.set_connected(True)
        publisher_server = serve_runtime(metrics, state, port=0, host="127.0.0.1")
        started.append(publisher_server)
        run_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(generated / "prometheus" / "rules.yml")],
            "scrape_configs": [
                {"job_name": "topo-run", "static_configs": [{"targets": [f"127.0.0.1:{run_port}"]}]},
                {"job_name": "topo-monitor", "static_configs": [{"targets": [monitor_url.split("//")[1]]}]},
                {"job_name": "topo-publisher",
                 "static_configs": [{"targets": [f"127.0.0.1:{publisher_server.port}"]}]},
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = brokers.start_prometheus_server(root / "prometheus.yml", root / "prometheus")
        started.append(prometheus)
        stack = Stack(topology, generated, env, root, run_port, None, monitor_url, publisher,  # type: ignore[arg-type]
                      publisher_server, prometheus)
        stack.start_consumer()
        started.append(stack)
        yield stack
    finally:
        for thing in reversed(started):
            if isinstance(thing, Stack):
                thing.consumer.stop()
                thing.publisher.close()
            else:
                thing.stop()
        monkeypatch.undo()
        group = topology.group(GROUP)
        topics = [t for s in group.subscriptions for t in s.topics] + [group.kafka.dlq_topic]
        for future in kafka_admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)
        for future in kafka_admin.delete_consumer_groups([group.kafka.group_id]).values():
            with contextlib.suppress(Exception):  # still shutting down: the group expires on its own
                future.result(timeout=60)


def test_every_metric_in_rules_and_dashboards_is_exported(stack: Stack) -> None:
    """Scrape the running `topo run`, `topo monitor` and publisher: every name the generated rules
    and panels use is among what they export."""
    stack.publish(5)
    wait_for(lambda: total(scrape(f"http://127.0.0.1:{stack.run_port}/metrics"),
                           "topo_events_consumed_total") >= 5, 60, "the consumer to handle 5 events")
    wait_for(lambda: "kafka_consumergroup_group_lag" in metric_names(scrape(f"{stack.monitor_url}/metrics")), 30,
             "the monitor's first poll")
    exported = (metric_names(scrape(f"http://127.0.0.1:{stack.run_port}/metrics"))
                | metric_names(scrape(f"{stack.monitor_url}/metrics"))
                | metric_names(scrape(f"http://127.0.0.1:{stack.publisher_server.port}/metrics")))
    used: set[str] = set()
    rules = yaml.safe_load((stack.generated / "prometheus" / "rules.yml").read_text())
    used |= {name for g in rules["groups"] for r in g["rules"] for name in names_in_expr(r["expr"])}
    for path in (stack.generated / "grafana" / "dashboards").glob("*.json"):
        dashboard = yaml.safe_load(path.read_text())
        used |= {name for p in dashboard["panels"] for t in p["targets"] for name in names_in_expr(t["expr"])}
    members = scrape(f"{stack.monitor_url}/metrics")
    assert total(members, "topo_consumergroup_members", group=GROUP) >= 1  # the running consumer is seen
    assert used, "no metric names found in the generated files"
    assert not used - exported, f"used but not exported: {sorted(used - exported)}"


def test_lag_alert_fires_while_the_consumer_is_stopped_and_resolves(stack: Stack) -> None:
    assert not stack.alerts("TopoConsumerLag")
    stack.consumer.stop()
    stack.publish(1500)
    published = time.monotonic()
    firing = wait_for(lambda: stack.alerts("TopoConsumerLag"), 60, "TopoConsumerLag to fire")
    print(f"TopoConsumerLag fired {time.monotonic() - published:.1f}s after 1500 events were published")
    labels = firing[0]["labels"]
    assert labels["event_type"] == EVENT and labels["chain_id"] == "1" and labels["severity"] == "warning"
    assert float(firing[0]["value"]) >= 1500
    assert f"topo lag --group {GROUP}" in firing[0]["annotations"]["description"]
    # The stopped consumer is also reported down (no member on the broker, no runtime scraped).
    wait_for(lambda: stack.alerts("TopoConsumerDown"), 60, "TopoConsumerDown to fire")

    stack.start_consumer()
    restarted = time.monotonic()
    wait_for(lambda: not stack.alerts("TopoConsumerLag") and not stack.alerts("TopoConsumerLag", "pending"), 90,
             "TopoConsumerLag to resolve after the consumer caught up")
    print(f"TopoConsumerLag resolved {time.monotonic() - restarted:.1f}s after the consumer was ready again")
    lag = stack.query(f'sum(kafka_consumergroup_group_lag{{group="{GROUP}"}})')
    assert lag and float(lag[0]["value"][1]) < 1000


def test_dead_letter_alert_fires_and_resolves(stack: Stack) -> None:
    assert not stack.alerts("TopoDeadLettered")
    stack.publish(1, note="poison")
    published = time.monotonic()
    firing = wait_for(lambda: stack.alerts("TopoDeadLettered"), 60, "TopoDeadLettered to fire")
    print(f"TopoDeadLettered fired {time.monotonic() - published:.1f}s after the poison event was published")
    assert firing[0]["labels"]["event_type"] == EVENT
    dead = wait_for(lambda: stack.query(f'sum(topo_consumergroup_dead_letter_events{{group="{GROUP}"}}) >= 1'),
                    30, "the monitor to count the dead letter")
    assert float(dead[0]["value"][1]) == 1
    # Out of the failure window (error_rate.for = 15s) the alert resolves.
    wait_for(lambda: not stack.alerts("TopoDeadLettered"), 60, "TopoDeadLettered to resolve")
