"""Generated provisioning files: Kubernetes manifests validate against their CRDs; output is
deterministic; scripts parse; names are quoted. Unit tests, no broker."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.provision.helpers import REFERENCE, small_doc, topology_doc
from topo.core.desired import kafka_topics
from topo.core.model import Topology
from topo.generator.emit import kafka as kafka_emitter
from topo.generator.emit import rabbitmq as rabbit_emitter
from topo.generator.resolve import resolve

# The CRDs live in shared/ beside the repository (CI's copy), or the workplace's shared/;
# TOPO_CRDS_DIR overrides both.
CRD_CANDIDATES = [Path(os.environ["TOPO_CRDS_DIR"])] if "TOPO_CRDS_DIR" in os.environ else [
    Path(__file__).resolve().parents[3] / "shared" / "crds", Path("/work/shared/crds")]
CRDS = next((path for path in CRD_CANDIDATES if path.is_dir()), CRD_CANDIDATES[0])
CRD_FILES = {
    ("kafka.strimzi.io", "KafkaTopic"): "strimzi-kafkatopic.crd.yaml",
    ("rabbitmq.com", "Exchange"): "rabbitmq-exchanges.crd.yaml",
    ("rabbitmq.com", "Queue"): "rabbitmq-queues.crd.yaml",
    ("rabbitmq.com", "Binding"): "rabbitmq-bindings.crd.yaml",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def odd_names() -> dict[str, Any]:
    """Names a Kubernetes resource cannot carry as they are: upper case, underscores, near-collisions."""
    doc = small_doc("Odd_Topology")
    doc["naming"] = {"topic": "{chain}.{event_type}"}
    doc["chains"] = {1: {"name": "Main_Net"}, 2: {"name": "main-net"}}
    doc["events"]["block_new"] = {"key": "chain_id", "payload": {"n": "integer"}}
    doc["consumer_groups"]["a" * 70] = {"subscribes": ["block_new"]}
    return doc


def replicated() -> dict[str, Any]:
    """Production's replication: 3 replicas per partition (min.insync.replicas 2 by default)."""
    doc = small_doc("t-replicated")
    doc["broker"]["kafka"] = {"replication_factor": 3}
    return doc


TOPOLOGIES = {
    "reference": lambda: resolve(REFERENCE),
    "replicated": lambda: resolve(replicated()),
    "renamed": lambda: resolve(topology_doc("t-0123abcd")),
    "small": lambda: resolve(small_doc("t-small")),
    "odd": lambda: resolve(odd_names()),
}


@functools.cache
def validator(group: str, kind: str, version: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / CRD_FILES[(group, kind)]).read_text())
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {version} is not served by the CRD (served: {sorted(served)})"
    return jsonschema.Draft7Validator(served[version]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_every_manifest_validates_against_its_crd(name: str) -> None:
    topology: Topology = TOPOLOGIES[name]()
    files = {**kafka_emitter.emit(topology), **rabbit_emitter.emit(topology)}
    manifests = {path: text for path, text in files.items() if path.startswith("k8s/")}
    assert set(manifests) == {"k8s/kafka/kafkatopics.yaml", "k8s/rabbitmq/exchanges.yaml",
                              "k8s/rabbitmq/queues.yaml", "k8s/rabbitmq/bindings.yaml"}
    seen: dict[str, set[str]] = {}
    for path, text in manifests.items():
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        assert documents, path
        for document in documents:
            group, version = document["apiVersion"].split("/")
            validator(group, document["kind"], version).validate(document)
            resource = document["metadata"]["name"]
            assert DNS_LABEL.match(resource) and len(resource) <= 63, resource
            assert resource not in seen.setdefault(document["kind"], set()), f"duplicate {document['kind']} {resource}"
            seen[document["kind"]].add(resource)
    topics = [d for d in yaml.safe_load_all(manifests["k8s/kafka/kafkatopics.yaml"]) if d]
    assert {d["spec"]["topicName"] for d in topics} == {t.name for t in kafka_topics(topology)}
    for document in topics:
        assert LABEL_VALUE.match(document["metadata"]["labels"]["strimzi.io/cluster"])


def test_strimzi_topics_carry_the_exact_kafka_names_and_settings() -> None:
    topology = resolve(topology_doc("t-0123abcd"))
    documents = [d for d in yaml.safe_load_all(kafka_emitter.emit(topology)["k8s/kafka/kafkatopics.yaml"]) if d]
    by_topic = {d["spec"]["topicName"]: d for d in documents}
    pending = by_topic["t-0123abcd.transaction.pending.138"]
    assert pending["metadata"]["name"] == "t-0123abcd-transaction-pending-138"
    assert pending["spec"] == {"topicName": "t-0123abcd.transaction.pending.138", "partitions": 3, "replicas": 1,
                               "config": {"retention.ms": "86400000"}}
    assert by_topic["t-0123abcd.analytics.dlq"]["spec"]["config"] == {"cleanup.policy": "delete",
                                                                      "retention.ms": "2592000000"}


def test_replication_reaches_the_script_and_every_manifest() -> None:
    topology = resolve(replicated())
    files = {**kafka_emitter.emit(topology), **rabbit_emitter.emit(topology)}
    topics = [d for d in yaml.safe_load_all(files["k8s/kafka/kafkatopics.yaml"]) if d]
    assert topics and all(d["spec"]["replicas"] == 3 and d["spec"]["config"]["min.insync.replicas"] == "2"
                          for d in topics), topics
    script = files["kafka/topics.sh"]
    assert script.count("min.insync.replicas=2") >= len(topics), "every topic's create/alter carries it"
    queues = [d for d in yaml.safe_load_all(files["k8s/rabbitmq/queues.yaml"]) if d]
    assert queues and all(d["spec"]["type"] == "quorum" for d in queues)
    dead_lettering = [d["spec"]["arguments"] for d in queues if "x-dead-letter-exchange" in d["spec"]["arguments"]]
    assert dead_lettering and all(a["x-dead-letter-strategy"] == "at-least-once" and a["x-overflow"] == "reject-publish"
                                  for a in dead_lettering), dead_lettering


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_output_is_deterministic_and_scripts_parse(name: str, tmp_path: Path) -> None:
    first = {**kafka_emitter.emit(TOPOLOGIES[name]()), **rabbit_emitter.emit(TOPOLOGIES[name]())}
    second = {**kafka_emitter.emit(TOPOLOGIES[name]()), **rabbit_emitter.emit(TOPOLOGIES[name]())}
    assert first == second
    for script in ("kafka/topics.sh", "rabbitmq/provision.sh"):
        path = tmp_path / script.replace("/", "-")
        path.write_text(first[script])
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
        assert "guest:" not in first[script] and "guest@" not in first[script]
    definitions = json.loads(first["rabbitmq/definitions.json"])
    assert {q["vhost"] for q in definitions["queues"]} == {"/"}


def test_names_reach_the_shell_quoted() -> None:
    doc = small_doc("t-quote")
    doc["chains"] = {1: {"name": "it's$(rm -rf)"}}
    doc["naming"] = {"topic": "{chain}.{event_type}"}
    files = {**kafka_emitter.emit(resolve(doc)), **rabbit_emitter.emit(resolve(doc))}
    topic = "it's$(rm -rf).block.new"
    assert f"ensure_topic {shlex.quote(topic)} " in files["kafka/topics.sh"]
    # Wherever the name appears, the shell reads it as one quoted word: nothing runs.
    for line in files["kafka/topics.sh"].splitlines() + files["rabbitmq/provision.sh"].splitlines():
        if "rm -rf" in line:
            words = shlex.split(line, comments=True)
            assert any("$(rm -rf)" in word for word in words), line
