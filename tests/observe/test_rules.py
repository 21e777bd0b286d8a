"""Generated Prometheus rules and their promtool unit tests, for three different topologies."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from topo.core.model import Topology
from topo.generator.emit import grafana, prometheus
from topo.generator.load import load_topology
from topo.generator.resolve import resolve
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.exporter import EXPORTED_NAMES

from .support import REPO, names_in_expr, unfiltered_selectors, write_all

ODD = {
    # Kafka, two chains, durations sharing only 5s, a three-decimal ratio, an exactly-once group.
    "version": 1, "name": "oddball",
    "broker": {"kind": "kafka", "kafka": {"partitions": 2}},
    "chains": {5: {"name": "five"}, 7: {"name": "seven"}},
    "events": {"a.b": {"producers": ["p"], "payload": {"x": "string"}},
               "c.d": {"producers": ["p"], "ordered": True, "payload": {"y": "integer"}}},
    "consumer_groups": {
        "one": {"subscribes": ["a.b", "c.d"],
                "alerts": {"consumer_lag": {"events": 7, "seconds": "45s", "for": "45s"}}},
        "two": {"subscribes": [{"event": "c.d", "chains": [7]}], "delivery": "exactly_once",
                "alerts": {"dead_letter": {"events": 2}, "error_rate": {"ratio": 0.333, "for": "100s"}}},
    },
    "alerts": {"stalled": {"for": "70s"}, "consumer_lag": {"for": "45s"}},
}


def topologies() -> dict[str, Topology]:
    return {
        "explorer": load_topology(REPO / "topology.yaml"),
        "paynet": load_topology(REPO / "tests/fixtures/topologies/second.yaml"),
        "oddball": resolve(ODD),
    }


@pytest.fixture(scope="module", params=["explorer", "paynet", "oddball"])
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Topology, Path]:
    topology = topologies()[request.param]
    out = tmp_path_factory.mktemp(request.param)
    write_all(prometheus.emit(topology), out)
    return topology, out / "prometheus"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_promtool_check_rules(generated: tuple[Topology, Path], promtool: str) -> None:
    _, folder = generated
    result = run([promtool, "check", "rules", "rules.yml"], folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(generated: tuple[Topology, Path], promtool: str) -> None:
    _, folder = generated
    result = run([promtool, "test", "rules", "rules.test.yml"], folder)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case(generated: tuple[Topology, Path]) -> None:
    topology, folder = generated
    rules = yaml.safe_load((folder / "rules.yml").read_text())
    tests = yaml.safe_load((folder / "rules.test.yml").read_text())
    checks = [check for test in tests["tests"] for check in test["alert_rule_test"]]
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    for name in names:
        of_name = [c for c in checks if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in of_name), f"{name} never shown firing"
        assert any(not c.get("exp_alerts") for c in of_name), f"{name} never shown silent"
    # One rule group per consumer group (plus the monitor's), thresholds from the merged alerts.
    assert [g["name"] for g in rules["groups"]] == [f"topo.{topology.name}.{g.name}" for g in topology.groups] + [
        f"topo.{topology.name}.monitor"]
    for group, rule_group in zip(topology.groups, rules["groups"], strict=False):
        lag = [r for r in rule_group["rules"] if r["alert"] == "TopoConsumerLag"]
        assert lag and all(r["expr"].endswith(f"> {group.alerts.lag_events}") for r in lag)
        assert all("topo lag --group " + group.name in r["annotations"]["description"] for r in rule_group["rules"])


def test_a_wrong_threshold_fails_the_generated_tests(promtool: str, tmp_path: Path) -> None:
    """The silent cases sit exactly at the threshold: moving it by one makes promtool fail."""
    topology = resolve(ODD)
    write_all(prometheus.emit(topology), tmp_path)
    folder = tmp_path / "prometheus"
    rules = (folder / "rules.yml").read_text()
    assert '> 7"' in rules
    (folder / "rules.yml").write_text(rules.replace('> 7"', '> 6"'))
    result = run([promtool, "test", "rules", "rules.test.yml"], folder)
    assert result.returncode != 0
    assert "TopoConsumerLag" in result.stdout + result.stderr


def test_output_is_deterministic() -> None:
    for topology in topologies().values():
        assert prometheus.emit(topology) == prometheus.emit(topology)


def exported_by_runtime(topology: Topology) -> set[str]:
    metrics = RuntimeMetrics(topology)
    metrics.init_publisher()
    for group in topology.groups:
        metrics.init_group(group)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(sample.name for sample in family.samples)
    return names


def used_names(topology: Topology) -> set[str]:
    used: set[str] = set()
    rules: dict[str, Any] = yaml.safe_load(prometheus.emit(topology)[prometheus.RULES_PATH])
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= names_in_expr(rule["expr"])
    for path, text in grafana.emit(topology).items():
        if path.endswith(".json"):
            for panel in yaml.safe_load(text)["panels"]:
                for target in panel["targets"]:
                    used |= names_in_expr(target["expr"])
    return used


def test_every_name_used_is_exported_by_runtime_or_monitor() -> None:
    """Static half of the check (the e2e test scrapes real processes): names in rules and panels
    are among the series the runtime's registry and the monitor's collector can produce."""
    for topology in topologies().values():
        missing = used_names(topology) - exported_by_runtime(topology) - EXPORTED_NAMES
        assert not missing, f"{topology.name}: used but exported by nobody: {sorted(missing)}"


def test_every_selector_in_rules_and_panels_filters_on_the_topology() -> None:
    """Two topologies (or two groups of the same name in two topologies) on one Prometheus never
    read each other's series: every selector names `topology="<name>"`, and the alerts carry it."""
    for topology in topologies().values():
        rules: dict[str, Any] = yaml.safe_load(prometheus.emit(topology)[prometheus.RULES_PATH])
        for group in rules["groups"]:
            for rule in group["rules"]:
                assert not unfiltered_selectors(rule["expr"], topology.name), rule["expr"]
                assert rule["labels"]["topology"] == topology.name
        for path, text in grafana.emit(topology).items():
            if path.endswith(".json"):
                for panel in yaml.safe_load(text)["panels"]:
                    for target in panel["targets"]:
                        assert not unfiltered_selectors(target["expr"], topology.name), (path, target["expr"])
        tests: dict[str, Any] = yaml.safe_load(prometheus.emit(topology)[prometheus.TESTS_PATH])
        for test in tests["tests"]:
            for series in test["input_series"]:
                assert not unfiltered_selectors(series["series"], topology.name), series["series"]


def test_runtime_series_carry_the_topology_label() -> None:
    for topology in topologies().values():
        metrics = RuntimeMetrics(topology)
        metrics.init_publisher()
        for group in topology.groups:
            metrics.init_group(group)
        samples = [sample for family in metrics.registry.collect() for sample in family.samples]
        assert samples and all(sample.labels["topology"] == topology.name for sample in samples)
