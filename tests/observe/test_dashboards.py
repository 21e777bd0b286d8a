"""Generated Grafana dashboards, provisioning files and Kubernetes manifests: structure and schemas."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from topo.core.model import BrokerKind, Topology
from topo.generator.emit import autoscaling, grafana
from topo.generator.load import load_topology

from .support import REPO

# The CRDs live in shared/ beside the repository (CI's copy), or the workplace's shared/;
# TOPO_CRDS_DIR overrides both.
CRD_CANDIDATES = [Path(os.environ["TOPO_CRDS_DIR"])] if "TOPO_CRDS_DIR" in os.environ else [
    Path(__file__).resolve().parents[3] / "shared" / "crds", Path("/work/shared/crds")]
CRDS = next((path for path in CRD_CANDIDATES if path.is_dir()), CRD_CANDIDATES[0])
KEDA_CRD = CRDS / "keda-scaledobject.crd.yaml"
PANEL_TYPES = {"timeseries", "stat"}
GRAFANA_UNITS = {"none", "short", "s", "ops", "percentunit", "bool_yes_no"}


@pytest.fixture(scope="module", params=["topology.yaml", "tests/fixtures/topologies/second.yaml"])
def topology(request: pytest.FixtureRequest) -> Topology:
    return load_topology(REPO / request.param)


# Grafana's dashboard JSON model (schemaVersion 39), the parts the generator writes.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "tags", "editable"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 39},
        "id": {"type": "null"},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"type": {"enum": ["datasource", "custom", "query", "constant"]}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets", "fieldConfig"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": sorted(PANEL_TYPES)},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
                    "w": {"type": "integer", "minimum": 1, "maximum": 24},
                    "x": {"type": "integer", "minimum": 0, "maximum": 23}}},
                "datasource": {"type": "object", "required": ["type", "uid"],
                               "properties": {"uid": {"const": "${datasource}"}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr", "datasource"],
                    "properties": {"expr": {"type": "string", "minLength": 1}}}},
                "fieldConfig": {"type": "object", "required": ["defaults"], "properties": {"defaults": {
                    "type": "object", "required": ["unit"],
                    "properties": {"unit": {"enum": sorted(GRAFANA_UNITS)}}}}},
            }}},
    },
}


def dashboards(topology: Topology) -> dict[str, dict[str, Any]]:
    files = grafana.emit(topology)
    return {path: json.loads(text) for path, text in files.items() if path.endswith(".json")}


def test_overview_and_one_dashboard_per_group(topology: Topology) -> None:
    paths = set(dashboards(topology))
    assert paths == {"grafana/dashboards/overview.json",
                     *(f"grafana/dashboards/group-{g.name}.json" for g in topology.groups)}


def test_dashboards_match_the_schema_every_panel_has_a_query_and_a_unit(topology: Topology) -> None:
    uids = set()
    for path, dashboard in dashboards(topology).items():
        jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert ids == list(range(1, len(ids) + 1)), path
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        assert {"datasource", "chain", "group"} <= variables, path
        for panel in dashboard["panels"]:
            assert panel["fieldConfig"]["defaults"]["unit"], (path, panel["title"])
            assert all(t["expr"].strip() for t in panel["targets"]), (path, panel["title"])
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        # Panels never overlap on the grid.
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            g = panel["gridPos"]
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not area & cells, (path, panel["title"])
            assert g["x"] + g["w"] <= 24
            cells |= area
    assert len(uids) == len(dashboards(topology)), "dashboard uids must be unique"


def test_overview_covers_the_spec(topology: Topology) -> None:
    overview = dashboards(topology)["grafana/dashboards/overview.json"]
    exprs = " ".join(t["expr"] for p in overview["panels"] for t in p["targets"])
    for name in ("topo_events_published_total", "topo_events_consumed_total", "topo_events_failed_total",
                 "topo_consumergroup_dead_letter_events", "topo_consumergroup_members"):
        assert name in exprs
    lag = "kafka_consumergroup_group_lag" if topology.broker is BrokerKind.KAFKA else "topo_rabbitmq_queue_lag"
    assert lag in exprs


def test_chain_variable_lists_the_topology_chains(topology: Topology) -> None:
    overview = dashboards(topology)["grafana/dashboards/overview.json"]
    chain = next(v for v in overview["templating"]["list"] if v["name"] == "chain")
    assert [o["value"] for o in chain["options"] if o["value"] != "$__all"] == [str(c.id) for c in topology.chains]


def test_provisioning_files(topology: Topology) -> None:
    files = grafana.emit(topology)
    providers = yaml.safe_load(files["grafana/provisioning/dashboards.yaml"])
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"
    assert providers["providers"][0]["options"]["path"].endswith(topology.name)
    sources = yaml.safe_load(files["grafana/provisioning/datasources.yaml"])
    assert sources["datasources"][0]["type"] == "prometheus"
    assert sources["datasources"][0]["url"] == "${PROMETHEUS_URL}"  # a reference, never a value


def test_dashboards_are_deterministic(topology: Topology) -> None:
    assert grafana.emit(topology) == grafana.emit(topology)


# --------------------------------------------------------------------------- Kubernetes


def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def manifests(topology: Topology) -> dict[str, list[dict[str, Any]]]:
    return {path: [d for d in yaml.safe_load_all(text) if d]
            for path, text in autoscaling.emit(topology).items()}


def test_a_deployment_and_a_scaled_object_per_group(topology: Topology) -> None:
    files = manifests(topology)
    for group in topology.groups:
        kinds = [d["kind"] for d in files[f"k8s/deploy/{group.name}.yaml"]]
        assert kinds == ["Deployment", "ScaledObject"]
    assert [d["kind"] for d in files["k8s/monitor/lag-monitor.yaml"]] == ["Deployment"]


def test_scaled_objects_validate_against_the_keda_crd(topology: Topology) -> None:
    schema = keda_schema()
    for path, documents in manifests(topology).items():
        for document in documents:
            if document["kind"] == "ScaledObject":
                jsonschema.validate(document, schema)
                assert document["apiVersion"] == "keda.sh/v1alpha1", path


def test_scaling_follows_the_topology(topology: Topology) -> None:
    files = manifests(topology)
    for group in topology.groups:
        deployment, scaled = files[f"k8s/deploy/{group.name}.yaml"]
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:3] == ["run", "--group", group.name]
        assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
        triggers = scaled["spec"]["triggers"]
        if topology.broker is BrokerKind.KAFKA:
            partitions = sum(topology.event(s.event).kafka.partitions * len(s.topics) for s in group.subscriptions)
            assert scaled["spec"]["maxReplicaCount"] == partitions
            assert triggers[0]["type"] == "kafka"
            assert triggers[0]["metadata"]["lagThreshold"] == str(group.alerts.lag_events)
            assert triggers[0]["metadata"]["consumerGroup"] == group.kafka.group_id
        else:
            assert [t["metadata"]["queueName"] for t in triggers] == list(group.rabbitmq.queues)
            assert all(t["type"] == "rabbitmq" and t["metadata"]["mode"] == "QueueLength" for t in triggers)
            if group.rabbitmq.single_active_consumer:
                assert scaled["spec"]["maxReplicaCount"] == len(group.rabbitmq.queues)


def test_connection_settings_come_from_secrets_and_config_maps(topology: Topology) -> None:
    for path, documents in manifests(topology).items():
        text = json.dumps(documents)
        assert "guest:guest" not in text and "127.0.0.1" not in text, path  # no values, only references
        for document in documents:
            if document["kind"] != "Deployment":
                continue
            env = document["spec"]["template"]["spec"]["containers"][0]["env"]
            assert env, path
            for item in env:
                assert "value" not in item, (path, item)
                source = item["valueFrom"]
                ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
                assert ref["key"] == item["name"]
            names = {item["name"] for item in env}
            if topology.broker is BrokerKind.RABBITMQ:
                url = next(i for i in env if "RABBITMQ_URL" in i["name"] or "AMQP" in i["name"])
                assert "secretKeyRef" in url["valueFrom"]
            assert names


def test_manifests_are_deterministic(topology: Topology) -> None:
    assert autoscaling.emit(topology) == autoscaling.emit(topology)
