"""Every generated Kubernetes manifest validates offline, and the kustomization applies as generated.

Built-in kinds are checked against the Kubernetes OpenAPI schemas bundled by `kubernetes-validate`
(strict: an unknown field fails); custom resources (KEDA, Strimzi, RabbitMQ's topology operator,
the Prometheus Operator) against their CRD's openAPIV3Schema (the shared crds folder, see test_manifests.py, and
tests/fixtures/crds/). `kubectl kustomize` (offline; kubectl bundles kustomize) builds the generated
kustomization and the documented overlay that adds the Secret from the user's secrets.env.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.provision.helpers import REFERENCE, small_doc, write
from tests.provision.test_manifests import CRDS
from tests.support.availability import must_fail
from topo.core.model import BrokerKind, Topology
from topo.generator.emit import emit_all
from topo.generator.resolve import resolve

CRD_FILES = {
    ("kafka.strimzi.io", "KafkaTopic"): "strimzi-kafkatopic.crd.yaml",
    ("rabbitmq.com", "Exchange"): "rabbitmq-exchanges.crd.yaml",
    ("rabbitmq.com", "Queue"): "rabbitmq-queues.crd.yaml",
    ("rabbitmq.com", "Binding"): "rabbitmq-bindings.crd.yaml",
    ("keda.sh", "ScaledObject"): "keda-scaledobject.crd.yaml",
}
# Not in shared/crds: kept with the tests (tests/fixtures/crds/README.md names their source).
VENDORED_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "crds"
CRD_PATHS = {key: CRDS / name for key, name in CRD_FILES.items()} | {
    ("monitoring.coreos.com", "ServiceMonitor"): VENDORED_CRDS / "prometheus-servicemonitor.crd.yaml",
    ("monitoring.coreos.com", "PodMonitor"): VENDORED_CRDS / "prometheus-podmonitor.crd.yaml",
}
KUBERNETES_VERSION = kubernetes_validate.latest_version()
BROKER_OBJECTS = {"KafkaTopic", "Exchange", "Queue", "Binding"}
SECRET_VALUE = "s3cret-from-the-overlay"


def rabbit_doc() -> dict[str, Any]:
    doc = copy.deepcopy(REFERENCE)
    doc["broker"]["kind"] = "rabbitmq"
    return doc


def deployed_doc() -> dict[str, Any]:
    """A namespace and an image of its own; a required setting and a required credential (no default)."""
    doc = small_doc("t-deployed")
    doc["deploy"] = {"image": "registry.example:5000/acme/bus-topo:1.4.0", "namespace": "events"}
    doc["broker"]["kafka"] = {"bootstrap_servers": "${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}",
                              "security_protocol": "${KAFKA_SECURITY_PROTOCOL}",
                              "sasl_password": "${KAFKA_SASL_PASSWORD}",
                              "sasl_username": "${KAFKA_SASL_USERNAME:-hunter2}"}
    return doc


TOPOLOGIES = {"reference": lambda: resolve(REFERENCE), "rabbitmq": lambda: resolve(rabbit_doc()),
              "deployed": lambda: resolve(deployed_doc())}


@functools.cache
def crd_validator(group: str, kind: str, version: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD_PATHS[(group, kind)].read_text())
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {version} is not served by the CRD (served: {sorted(served)})"
    return jsonschema.Draft7Validator(served[version]["schema"]["openAPIV3Schema"])


def validate(document: dict[str, Any]) -> None:
    group, _, version = document["apiVersion"].rpartition("/")
    if (group, document["kind"]) in CRD_PATHS:
        crd_validator(group, document["kind"], version).validate(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if must_fail():
            pytest.fail("kubectl (which bundles kustomize) is not installed: install it to build the kustomizations")
        pytest.skip("kubectl is not installed")
    return found


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60,
                          check=False)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(params=sorted(TOPOLOGIES))
def generated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Topology, Path]:
    topology: Topology = TOPOLOGIES[request.param]()
    root = tmp_path / "generated"
    for path, text in emit_all(topology).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return topology, root


def test_every_generated_manifest_validates(generated: tuple[Topology, Path]) -> None:
    _, root = generated
    manifests = sorted(p for p in (root / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")
    kinds = set()
    for path in manifests:
        for document in documents(path.read_text()):
            validate(document)
            kinds.add(document["kind"])
    assert {"ConfigMap", "Deployment", "Service", "ScaledObject", "ServiceMonitor", "PodMonitor"} <= kinds


def test_strict_validation_rejects_what_kubernetes_would(generated: tuple[Topology, Path]) -> None:
    """The checks can fail: a misspelt field and a missing one are caught, for a built-in and a custom kind."""
    _, root = generated
    deployment, scaled = documents(next((root / "k8s" / "deploy").glob("*.yaml")).read_text())
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    untargeted = copy.deepcopy(scaled)
    del untargeted["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate(untargeted)


def test_the_kustomization_builds_every_resource_and_references_resolve(generated: tuple[Topology, Path]) -> None:
    topology, root = generated
    k8s = root / "k8s"
    listed = yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"]
    other = "rabbitmq" if topology.broker is BrokerKind.KAFKA else "kafka"
    on_disk = sorted(p.relative_to(k8s).as_posix() for p in k8s.rglob("*.yaml")
                     if p.name != "kustomization.yaml" and not p.relative_to(k8s).as_posix().startswith(f"{other}/"))
    assert listed == on_disk

    built = kustomize(k8s)
    assert built.returncode == 0, built.stderr
    resources = documents(built.stdout)
    for document in resources:
        validate(document)
    namespace = topology.deploy.namespace if topology.deploy else None
    for document in resources:
        expected = None if document["kind"] in BROKER_OBJECTS else namespace
        assert document["metadata"].get("namespace") == expected, document["metadata"]
    [config_map] = [d for d in resources if d["kind"] == "ConfigMap"]
    for deployment in (d for d in resources if d["kind"] == "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == (topology.deploy.image if topology.deploy else None)
        for item in container["env"]:
            ref = item["valueFrom"].get("configMapKeyRef")
            if ref is not None and not ref["optional"]:
                assert ref["key"] in config_map["data"] or ref["key"] in config_map_required(k8s), ref


def config_map_required(k8s: Path) -> str:
    header = [line for line in (k8s / "config" / "configmap.yaml").read_text().splitlines()
              if line.startswith("# Required")]
    return header[0] if header else ""


def test_required_and_optional_keys_follow_the_topology_defaults() -> None:
    topology = resolve(deployed_doc())
    files = emit_all(topology)
    [config_map] = documents(files["k8s/config/configmap.yaml"])
    # Every non-secret key with a default is in the ConfigMap, with that default; required ones are named.
    assert config_map["data"] == {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "KAFKA_SASL_MECHANISM": "PLAIN"}
    assert "# Required, no default (add them in an overlay): KAFKA_SECURITY_PROTOCOL" in files[
        "k8s/config/configmap.yaml"]
    deployment, _ = documents(files["k8s/deploy/indexer.yaml"])
    refs = {item["name"]: item["valueFrom"] for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert refs["KAFKA_SECURITY_PROTOCOL"]["configMapKeyRef"]["optional"] is False
    assert refs["KAFKA_SASL_PASSWORD"]["secretKeyRef"]["optional"] is False
    assert refs["KAFKA_SASL_USERNAME"]["secretKeyRef"]["optional"] is True
    # KEDA reads the broker address and knows no default: required, and the ConfigMap always holds it.
    assert refs["KAFKA_BOOTSTRAP_SERVERS"]["configMapKeyRef"]["optional"] is False
    example = files["k8s/config/secrets.env.example"].splitlines()
    assert "KAFKA_SASL_PASSWORD=REPLACE_ME" in example and "# KAFKA_SASL_USERNAME=" in example
    # No credential, not even a default one, in the manifests.
    assert not any("hunter2" in text for path, text in files.items() if path.startswith("k8s/"))


def test_the_documented_overlay_adds_the_secret_and_fails_loudly_without_it(tmp_path: Path) -> None:
    topology = resolve(deployed_doc())
    generated = tmp_path / "generated"
    for path, text in emit_all(topology).items():
        (generated / path).parent.mkdir(parents=True, exist_ok=True)
        (generated / path).write_text(text)
    overlay = tmp_path / "deploy"
    overlay.mkdir()
    write(overlay, {"resources": ["../generated/k8s"],
                    "patches": [{"target": {"kind": "ConfigMap", "name": "t-deployed-topo-config"},
                                 "patch": "- {op: add, path: /data/KAFKA_SECURITY_PROTOCOL, value: SASL_SSL}"}],
                    "secretGenerator": [{"name": "t-deployed-topo-secrets", "namespace": "events",
                                         "envs": ["secrets.env"], "options": {"disableNameSuffixHash": True}}]},
          "kustomization.yaml")
    missing = kustomize(overlay)
    assert missing.returncode != 0 and "secrets.env" in missing.stderr

    example = (generated / "k8s" / "config" / "secrets.env.example").read_text()
    (overlay / "secrets.env").write_text(example.replace("REPLACE_ME", SECRET_VALUE))
    built = kustomize(overlay)
    assert built.returncode == 0, built.stderr
    resources = documents(built.stdout)
    for document in resources:
        validate(document)
    [secret] = [d for d in resources if d["kind"] == "Secret"]
    [config_map] = [d for d in resources if d["kind"] == "ConfigMap"]
    for deployment in (d for d in resources if d["kind"] == "Deployment"):
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            source = item["valueFrom"]
            ref = source.get("secretKeyRef") or source["configMapKeyRef"]
            target = secret if "secretKeyRef" in source else config_map
            assert ref["name"] == target["metadata"]["name"]
            assert ref["optional"] or ref["key"] in target["data"], f"{ref['key']} missing from {ref['name']}"
    assert set(secret["data"]) == {"KAFKA_SASL_PASSWORD"}  # the optional username keeps its default


def test_an_invalid_deploy_section_is_one_clear_line(tmp_path: Path) -> None:
    doc = small_doc("t-bad-deploy")
    doc["deploy"] = {"image": "Registry/Bad Image", "namespace": "Events"}
    path = write(tmp_path, doc)
    topo = Path(sys.executable).with_name("topo")
    result = subprocess.run([str(topo), "validate", "-t", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0
    assert "an image reference is [registry/]repository[:tag]" in result.stderr + result.stdout
    assert "a namespace is a DNS-1123 label" in result.stderr + result.stdout
