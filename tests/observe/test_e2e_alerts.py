"""End to end on real brokers and a real Prometheus: `topo run`, `topo monitor`, the generated rules.

One stack per broker: a topology with a 1s `for:`, its topics/queues applied with `topo apply`, a
`topo run` consumer and a `topo monitor` on free ports, a publisher serving the runtime's metrics
from this process, and a Prometheus server scraping all three every second and evaluating the
generated rules.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dev import brokers
from tests.support.availability import unavailable
from topo.core.model import Topology
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

pytestmark = pytest.mark.prometheus


@dataclass
class Stack:
    broker: str
    topology: Topology
    generated: Path
    env: dict[str, str]
    logs: Path
    run_port: int
    monitor_url: str
    publisher: Runtime
    publisher_server: ObservabilityServer
    prometheus: brokers.PrometheusServer
    consumer: Process | None = None
    seq: int = field(default=0)

    def start_consumer(self) -> None:
        self.consumer = Process.start(
            ["run", "--group", GROUP, "--topology", str(self.generated / "topology.json"), "--broker", self.broker,
             "--metrics-port", str(self.run_port), "--shutdown-timeout", "5"],
            self.env, self.logs / f"run-{uuid.uuid4().hex[:6]}.log")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{self.run_port}/readyz", timeout=2).status_code == 200,
                 60, "topo run to be ready")

    def stop_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()

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

    @property
    def lag_expr(self) -> str:
        if self.broker == "kafka":
            return f'sum(kafka_consumergroup_group_lag{{group="{GROUP}", event_type!=""}})'
        return f'sum(topo_rabbitmq_queue_lag{{group="{GROUP}", kind="events"}})'


def kafka_setup(request: pytest.FixtureRequest, topology: Topology) -> tuple[dict[str, str], Callable[[], None]]:
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    admin = request.getfixturevalue("kafka_admin")

    def cleanup() -> None:
        group = topology.group(GROUP)
        topics = [t for s in group.subscriptions for t in s.topics] + [group.kafka.dlq_topic]
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)
        for future in admin.delete_consumer_groups([group.kafka.group_id]).values():
            with contextlib.suppress(Exception):  # still shutting down: the group expires on its own
                future.result(timeout=60)

    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}, cleanup


def rabbit_setup(request: pytest.FixtureRequest, name: str) -> tuple[dict[str, str], Callable[[], None]]:
    """A vhost of our own (the rabbit_vhost fixture is per test; this stack serves a module)."""
    url = request.getfixturevalue("rabbitmq_url")
    api = request.getfixturevalue("rabbitmq_management")
    path = f"/api/vhosts/{api.quote(name)}"
    api.put(path, json={"description": "tests/observe e2e"})
    for user in dict.fromkeys((urllib.parse.unquote(urllib.parse.urlsplit(url).username or "guest"), api.user)):
        api.put(f"/api/permissions/{api.quote(name)}/{api.quote(user)}",
                json={"configure": ".*", "write": ".*", "read": ".*"})
    parsed = urllib.parse.urlsplit(url)
    vhost_url = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "/" + api.quote(name), "", ""))
    management = urllib.parse.urlsplit(api.url)
    credentials = f"{urllib.parse.quote(api.user, safe='')}:{urllib.parse.quote(api.password, safe='')}"
    management_url = urllib.parse.urlunsplit((management.scheme, f"{credentials}@{management.netloc}",
                                              management.path, "", ""))
    return {"RABBITMQ_URL": vhost_url, "RABBITMQ_MANAGEMENT_URL": management_url}, lambda: api.delete(path)


@pytest.fixture(scope="module", params=[pytest.param("kafka", marks=pytest.mark.kafka),
                                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not brokers.prometheus_binary():
        unavailable("Prometheus", "the prometheus binary is not installed")
    broker: str = request.param
    name = f"t-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp(f"e2e-{broker}")
    generated = root / "generated"
    topology = compile_topology(document(name, broker, lag_events=1000, lag_for="1s", failure_window="15s"),
                                generated)
    settings, cleanup = kafka_setup(request, topology) if broker == "kafka" else rabbit_setup(request, name)
    env = environment(**settings)
    monkeypatch = pytest.MonkeyPatch()
    started: list[Any] = []
    try:
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        applied = topo("apply", "-t", str(generated / "topology.json"), "--yes", env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        monitor = Process.start(["monitor", "-t", str(generated / "topology.json"), "--port", "0", "--host",
                                 "127.0.0.1", "--interval", "1"], env, root / "monitor.log")
        started.append(monitor)
        monitor_url = monitor.wait_for_line(r"serving (http://127\.0\.0\.1:\d+)/metrics").group(1)
        metrics = RuntimeMetrics(topology)
        publisher = Runtime.from_generated(generated, broker=broker, metrics=metrics)
        started.append(publisher)
        publisher.publisher()  # creates the publisher series at zero
        state = RuntimeState([])
        state.set_connected(True)
        publisher_server = serve_runtime(metrics, state, port=0, host="127.0.0.1")
        started.append(publisher_server)
        run_port = free_port()
        targets = {"topo-run": f"127.0.0.1:{run_port}", "topo-monitor": monitor_url.split("//")[1],
                   "topo-publisher": f"127.0.0.1:{publisher_server.port}"}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(generated / "prometheus" / "rules.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = brokers.start_prometheus_server(root / "prometheus.yml", root / "prometheus")
        started.append(prometheus)
        stack = Stack(broker, topology, generated, env, root, run_port, monitor_url, publisher, publisher_server,
                      prometheus)
        started.append(stack)
        stack.start_consumer()
        yield stack
    finally:
        for thing in reversed(started):
            if isinstance(thing, Stack):
                thing.stop_consumer()
            elif isinstance(thing, Runtime):
                thing.close()
            else:
                thing.stop()
        monkeypatch.undo()
        cleanup()


def test_every_metric_in_rules_and_dashboards_is_exported(stack: Stack) -> None:
    """Scrape the running `topo run`, `topo monitor` and publisher: every name the generated rules
    and panels use is among what they export."""
    stack.publish(5)
    wait_for(lambda: total(scrape(f"http://127.0.0.1:{stack.run_port}/metrics"),
                           "topo_events_consumed_total") >= 5, 60, "the consumer to handle 5 events")
    wait_for(lambda: total(scrape(f"{stack.monitor_url}/metrics"), "topo_consumergroup_members", group=GROUP) >= 1,
             30, "the monitor to see the running consumer")
    exported = (metric_names(scrape(f"http://127.0.0.1:{stack.run_port}/metrics"))
                | metric_names(scrape(f"{stack.monitor_url}/metrics"))
                | metric_names(scrape(f"http://127.0.0.1:{stack.publisher_server.port}/metrics")))
    used: set[str] = set()
    rules = yaml.safe_load((stack.generated / "prometheus" / "rules.yml").read_text())
    used |= {name for g in rules["groups"] for r in g["rules"] for name in names_in_expr(r["expr"])}
    for path in (stack.generated / "grafana" / "dashboards").glob("*.json"):
        dashboard = yaml.safe_load(path.read_text())
        used |= {name for p in dashboard["panels"] for t in p["targets"] for name in names_in_expr(t["expr"])}
    assert used, "no metric names found in the generated files"
    assert not used - exported, f"used but not exported: {sorted(used - exported)}"


def test_lag_alert_fires_while_the_consumer_is_stopped_and_resolves(stack: Stack) -> None:
    assert not stack.alerts("TopoConsumerLag")
    stack.stop_consumer()
    stack.publish(1500)
    published = time.monotonic()
    firing = wait_for(lambda: stack.alerts("TopoConsumerLag"), 60, "TopoConsumerLag to fire")
    print(f"[{stack.broker}] TopoConsumerLag fired {time.monotonic() - published:.1f}s after 1500 events")
    labels = firing[0]["labels"]
    assert labels["severity"] == "warning" and labels["topology"] == stack.topology.name
    if stack.broker == "kafka":
        assert labels["event_type"] == EVENT and labels["chain_id"] == "1"
    assert float(firing[0]["value"]) >= 1500
    assert f"topo lag --group {GROUP}" in firing[0]["annotations"]["description"]
    # The stopped consumer is also reported down (no member on the broker, no runtime scraped).
    wait_for(lambda: stack.alerts("TopoConsumerDown"), 60, "TopoConsumerDown to fire")

    stack.start_consumer()
    restarted = time.monotonic()
    wait_for(lambda: not stack.alerts("TopoConsumerLag") and not stack.alerts("TopoConsumerLag", "pending"), 90,
             "TopoConsumerLag to resolve after the consumer caught up")
    print(f"[{stack.broker}] TopoConsumerLag resolved {time.monotonic() - restarted:.1f}s after the restart")
    lag = stack.query(stack.lag_expr)
    assert lag and float(lag[0]["value"][1]) < 1000


def test_dead_letter_alert_fires_and_resolves(stack: Stack) -> None:
    assert not stack.alerts("TopoDeadLettered")
    stack.publish(1, note="poison")
    published = time.monotonic()
    firing = wait_for(lambda: stack.alerts("TopoDeadLettered"), 60, "TopoDeadLettered to fire")
    print(f"[{stack.broker}] TopoDeadLettered fired {time.monotonic() - published:.1f}s after the poison event")
    assert firing[0]["labels"]["event_type"] == EVENT
    dead = wait_for(lambda: stack.query(f'sum(topo_consumergroup_dead_letter_events{{group="{GROUP}"}}) >= 1'),
                    30, "the monitor to count the dead letter")
    assert float(dead[0]["value"][1]) == 1
    # Out of the failure window (error_rate.for = 15s) the alert resolves.
    wait_for(lambda: not stack.alerts("TopoDeadLettered"), 60, "TopoDeadLettered to resolve")
