"""generated/asyncapi/<topology>.yaml: what it says, and that the official AsyncAPI parser accepts it.

Every topology the tests use (the reference, the fixtures, the documents the test helpers build, and
variants of the connection settings) is compiled, and all documents go through the official parser
(npm `@asyncapi/parser`, dev/asyncapi/validate.mjs) in one node process, together with broken copies
that it must reject. `make test` installs the parser (`make asyncapi-parser`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from gen_support import REFERENCE, REPO, SECOND
from test_gen_naming import SHOP
from test_gen_validation import MINIMAL

from bench.generate import synthesise
from tests.brokers import test_tls
from tests.cli import support as cli_support
from tests.codegen.test_event_classes import SECOND as CODEGEN_SHIPPING
from tests.observe import support as observe_support
from tests.observe.test_rules import ODD
from tests.provision import helpers as provision_helpers
from tests.runtime import test_rabbitmq_transport
from tests.runtime import topologies as runtime_topologies
from topo.core.desired import kafka_topics, rabbit_queues
from topo.core.model import Topology
from topo.generator.emit import asyncapi
from topo.generator.emit.schemas import event_schema
from topo.generator.load import load

PARSER_DIR = REPO / "dev" / "asyncapi"
VALIDATE = PARSER_DIR / "validate.mjs"
ENV = {"RMQ_PASSWORD": "s3cret-from-env", "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the pure-Python loader takes seconds per document


def variant(name: str, kafka: dict[str, str], rabbitmq: dict[str, str]) -> dict[str, Any]:
    """A small topology with other connection settings (the parser costs about a second per document)."""
    doc = cli_support.small_doc(name)
    doc["broker"]["kafka"] = kafka
    doc["broker"]["rabbitmq"].update(rabbitmq)
    return doc


def catalogue() -> dict[str, str | dict[str, Any]]:
    """Every topology in the tests (YAML text or a document), by a name unique to this test."""
    topologies: dict[str, str | dict[str, Any]] = {"reference": REFERENCE.read_text()}
    for path in sorted((REPO / "tests" / "fixtures" / "topologies").glob("*.yaml")):
        topologies[f"fixture-{path.stem}"] = path.read_text()
    assert SECOND in (REPO / "tests" / "fixtures" / "topologies").glob("*.yaml")
    topologies.update({
        "runtime": runtime_topologies.document("rt"),
        "rabbitmq-transport": test_rabbitmq_transport.topology_doc("rmq", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "tls-kafka": test_tls.document("tlsk", "kafka"),
        "tls-rabbitmq": test_tls.document("tlsr", "rabbitmq"),
        "observe-kafka": observe_support.document("obsk", "kafka"),
        "observe-rabbitmq": observe_support.document("obsr", "rabbitmq"),
        "observe-rules": ODD,
        "cli": cli_support.small_doc("cli"),
        "provision": provision_helpers.topology_doc("prov"),
        "provision-small": provision_helpers.small_doc("provs"),
        "validation-minimal": MINIMAL,
        "naming": SHOP.replace("ORDERED", "true"),  # with "false" it is an invalid one
        "codegen-shipping": CODEGEN_SHIPPING,
        "bench": synthesise(4, 3, 3),
        "sasl-amqps": variant("saslamqps", {
            "security_protocol": "${KAFKA_SECURITY_PROTOCOL:-SASL_SSL}",
            "sasl_mechanism": "${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}",
        }, {"url": "amqps://app:literal-pw@rabbit.example.com/prod"}),
        "mixed-references": variant("mixed", {
            "bootstrap_servers": "${KAFKA_A:-kafka-a:9092},${KAFKA_B:-kafka-b:9092}",
        }, {"url": "amqp://${RMQ_USER:-app}:${RMQ_PASSWORD}@${RMQ_HOST:-rabbit}:${RMQ_PORT:-5673}/${RMQ_VHOST:-%2F}"}),
        "url-without-default": variant("nodefault", {}, {"url": "${RABBITMQ_URL}"}),
    })
    return topologies


@dataclass(frozen=True)
class Compiled:
    topology: Topology
    path: Path  # the AsyncAPI document
    text: str
    document: dict[str, Any]  # the text, loaded


def compile_document(name: str, source: str | dict[str, Any], folder: Path) -> Compiled:
    text = source if isinstance(source, str) else yaml.safe_dump(source, sort_keys=False)
    topology_file = folder / f"{name}.topology.yaml"
    topology_file.write_text(text)
    topology, diagnostics = load(topology_file, ENV)
    assert topology is not None, f"{name}: " + "; ".join(d.message for d in diagnostics)
    (relative, document_text), = asyncapi.emit(topology).items()
    assert relative == f"asyncapi/{topology.name}.yaml"
    target = folder / f"{name}.asyncapi.yaml"
    target.write_text(document_text)
    return Compiled(topology, target, document_text, yaml.load(document_text, Loader=LOADER))


def broken_copies(reference: Path, folder: Path) -> dict[str, Path]:
    """Documents the parser must reject: each breaks one rule of AsyncAPI 3.0."""
    text = reference.read_text()
    edits = {
        "bad-action": ("action: receive", "action: subscribe"),
        "dangling-ref": ("$ref: '#/components/messages/token.transfer'", "$ref: '#/components/messages/nothing'"),
        "bad-binding": ("partitions: 3", "partitions: 0"),
    }
    broken = {}
    for name, (old, new) in edits.items():
        assert old in text, f"{name}: {old!r} is not in the reference document any more; choose another edit"
        broken[name] = folder / f"broken-{name}.yaml"
        broken[name].write_text(text.replace(old, new))
    return broken


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    folder = tmp_path_factory.mktemp("asyncapi")
    return {name: compile_document(name, source, folder) for name, source in catalogue().items()}


@pytest.fixture(scope="module")
def parsed(documents: dict[str, Compiled], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, dict[str, Any]]:
    """The parser's verdict on every document and on the broken copies (one node process)."""
    node = shutil.which("node")
    if node is None or not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the AsyncAPI parser is not installed: run `make asyncapi-parser` (needs node and npm; "
                    "`make test` does it)")
    broken = broken_copies(documents["reference"].path, tmp_path_factory.mktemp("broken"))
    files = {**{name: compiled.path for name, compiled in documents.items()}, **broken}
    run = subprocess.run([node, str(VALIDATE), *map(str, files.values())], cwd=PARSER_DIR, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode in (0, 1), run.stderr
    results = {Path(result["file"]).resolve(): result for result in map(json.loads, run.stdout.splitlines())}
    return {name: results[path.resolve()] for name, path in files.items()}


def test_the_official_parser_accepts_the_document_of_every_test_topology(
        documents: dict[str, Compiled], parsed: dict[str, dict[str, Any]]) -> None:
    assert len(documents) >= 19
    assert {name: parsed[name]["errors"] for name in documents if parsed[name]["errors"]} == {}


@pytest.mark.parametrize("name", ["bad-action", "dangling-ref", "bad-binding"])
def test_the_parser_rejects_a_broken_document(parsed: dict[str, dict[str, Any]], name: str) -> None:
    assert parsed[name]["errors"], f"{name}: the parser accepted a broken document"


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolves(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False  # the document must stand alone
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return False
        node = node[token]
    return True


def test_every_ref_points_inside_the_document(documents: dict[str, Compiled]) -> None:
    for name, compiled in documents.items():
        refs = list(references(compiled.document))
        assert refs, name
        assert [ref for ref in refs if not resolves(compiled.document, ref)] == [], name
    assert not resolves({"components": {"messages": {}}}, "#/components/messages/a.b")  # the check can fail


def test_channels_and_operations_follow_the_desired_state(documents: dict[str, Compiled]) -> None:
    topology, document = documents["reference"].topology, documents["reference"].document
    channels, operations = document["channels"], document["operations"]
    traits = document["components"]["operationTraits"]
    for spec in kafka_topics(topology):
        binding = channels[f"kafka.{spec.name}"]["bindings"]["kafka"]
        assert channels[f"kafka.{spec.name}"]["address"] == spec.name
        assert (binding["partitions"], binding["replicas"]) == (spec.partitions, spec.replication_factor)
        assert binding["topicConfiguration"]["retention.ms"] == int(spec.configs["retention.ms"])
    assert channels["kafka.transaction.pending.1"]["bindings"]["kafka"]["topicConfiguration"] == {
        "retention.ms": 86_400_000}
    assert channels["kafka.explorer.notifications.dlq"]["bindings"]["kafka"]["topicConfiguration"][
        "cleanup.policy"] == ["delete"]
    for group in topology.groups:
        for topic in {t for s in group.subscriptions for t in s.topics} | {r.name for r in group.kafka.retry_topics}:
            receive = operations[f"{group.name}.receive.kafka.{topic}"]
            assert receive["action"] == "receive"
            group_ids = [traits[ref["$ref"].rsplit("/", 1)[1]].get("bindings", {}).get("kafka", {}).get("groupId")
                         for ref in receive["traits"]]
            assert {"type": "string", "enum": [group.kafka.group_id]} in group_ids
        assert operations[f"{group.name}.send.kafka.{group.kafka.dlq_topic}"]["action"] == "send"
        for queue in group.rabbitmq.queues:
            assert operations[f"{group.name}.receive.amqp-queue.{queue}"]["channel"] == {
                "$ref": f"#/channels/amqp-queue.{queue}"}
    for event in topology.events:
        for topic in event.topics:
            for producer in event.producers:
                assert operations[f"{producer}.send.kafka.{topic.topic}"]["action"] == "send"
                assert operations[f"{producer}.send.amqp.{topic.routing_key}"]["action"] == "send"
            amqp = channels[f"amqp.{topic.routing_key}"]["bindings"]["amqp"]
            assert amqp["is"] == "routingKey"
            assert amqp["exchange"]["name"] == topology.rabbitmq.exchange and amqp["exchange"]["type"] == "topic"
    for spec in rabbit_queues(topology):
        queue = channels[f"amqp-queue.{spec.name}"]["bindings"]["amqp"]
        assert queue["is"] == "queue" and queue["queue"]["name"] == spec.name
        assert queue["x-arguments"]["x-queue-type"] == "quorum"
    assert len(operations) == len({(o["action"], o["channel"]["$ref"], json.dumps(o["traits"]))
                                   for o in operations.values()})


def test_messages_carry_the_generated_json_schemas(documents: dict[str, Compiled]) -> None:
    topology, components = documents["reference"].topology, documents["reference"].document["components"]
    for event in topology.events:
        message = components["messages"][event.name]
        assert message["payload"] == {"$ref": f"#/components/schemas/{event.name}"}
        schema = {k: v for k, v in event_schema(topology, event).items() if k not in ("$schema", "$id")}
        assert components["schemas"][event.name] == schema
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert event.key in message["bindings"]["kafka"]["key"]["description"]
    trait = components["messageTraits"]["envelope"]
    assert trait["contentType"] == "application/json"
    assert "x-topo-key" in components["schemas"]["Headers"]["properties"]
    committed = REPO / "generated" / "asyncapi" / "explorer.yaml"
    assert committed.read_text() == documents["reference"].text


def test_servers_keep_references_as_variables_and_never_write_credentials(
        documents: dict[str, Compiled]) -> None:
    reference = documents["reference"].document["servers"]
    assert reference["kafka"]["host"] == "{KAFKA_BOOTSTRAP_SERVERS}"
    assert reference["kafka"]["variables"]["KAFKA_BOOTSTRAP_SERVERS"]["default"] == "127.0.0.1:9092"
    assert reference["kafka"]["protocol"] == "kafka" and "security" not in reference["kafka"]
    rabbit = reference["rabbitmq"]
    assert (rabbit["protocol"], rabbit["host"], rabbit["pathname"]) == ("amqp", "{host}", "/{vhost}")
    assert rabbit["variables"]["host"]["default"] == "127.0.0.1:5672"
    assert "RABBITMQ_URL" in rabbit["variables"]["host"]["description"]
    assert "guest" not in documents["reference"].text

    secure_text, secure = documents["sasl-amqps"].text, documents["sasl-amqps"].document
    assert secure["servers"]["kafka"]["protocol"] == "kafka-secure"
    assert secure["components"]["securitySchemes"]["kafka-sasl"]["type"] == "scramSha512"
    assert (secure["servers"]["rabbitmq"]["protocol"], secure["servers"]["rabbitmq"]["host"],
            secure["servers"]["rabbitmq"]["pathname"]) == ("amqps", "rabbit.example.com:5671", "/prod")
    assert "literal-pw" not in secure_text and "app:" not in secure_text

    mixed_text, mixed = documents["mixed-references"].text, documents["mixed-references"].document["servers"]
    assert mixed["kafka"]["host"] == "{KAFKA_A},{KAFKA_B}"
    assert mixed["kafka"]["variables"]["KAFKA_B"]["default"] == "kafka-b:9092"
    assert (mixed["rabbitmq"]["host"], mixed["rabbitmq"]["pathname"]) == ("{RMQ_HOST}:{RMQ_PORT}", "/{RMQ_VHOST}")
    assert set(mixed["rabbitmq"]["variables"]) == {"RMQ_HOST", "RMQ_PORT", "RMQ_VHOST"}
    assert "RMQ_USER" not in mixed_text and "RMQ_PASSWORD" not in mixed_text and ENV["RMQ_PASSWORD"] not in mixed_text

    nodefault = documents["url-without-default"].document["servers"]["rabbitmq"]
    assert "default" not in nodefault["variables"]["host"]


def test_the_document_is_byte_identical_from_run_to_run(documents: dict[str, Compiled]) -> None:
    for name, compiled in documents.items():
        assert asyncapi.emit(compiled.topology) == {asyncapi.path(compiled.topology): compiled.text}, name
