"""The spec's example payloads publish, verbatim, against the reference topology (on Kafka).

The examples are read from the spec itself (tests/fixtures/spec/event-system-spec.md, a copy of
the project's event-system specification): every ```json block that follows an `**Event**:` line
is that event's payload, its `0x...` placeholders filled with real values of the field's type; the
block under "Standard Event Format" is the envelope every published event must have. The
topology is the reference one renamed to this test's unique name (topics carry it), so nothing is
shared with other tests.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.support.kafka_cleanup import delete_topology_leftovers
from topo.cli import main
from topo.core.model import FieldType
from topo.generator.load import load_topology

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC = REPO_ROOT / "tests" / "fixtures" / "spec" / "event-system-spec.md"
# Values of the right shape for the spec's "0x..." placeholders, by field type.
PLACEHOLDERS = {FieldType.ADDRESS: "0x" + "ab" * 20, FieldType.HASH32: "0x" + "12" * 32, FieldType.HEX: "0x"}
BLOCK = re.compile(r"```json\s*(.*?)\s*```", re.DOTALL)

pytestmark = pytest.mark.timeout(300)


def spec_blocks() -> tuple[dict[str, dict[str, Any]], str]:
    """The spec's payload examples by event type, and its envelope example (as text: its payload is `{ ... }`)."""
    text = SPEC.read_text(encoding="utf-8")
    payloads: dict[str, dict[str, Any]] = {}
    envelope = ""
    for match in BLOCK.finditer(text):
        before = text[:match.start()]
        event = re.findall(r"\*\*Event\*\*: `([^`]+)`", before)
        heading = before.rfind("### ")
        if before[heading:].startswith("### Standard Event Format"):
            envelope = match.group(1)
        elif event and before.rfind("**Event**") > heading:
            payloads[event[-1]] = json.loads(match.group(1))
    return payloads, envelope


def filled(payload: dict[str, Any], types: dict[str, FieldType]) -> dict[str, Any]:
    return {name: PLACEHOLDERS[types[name]] if value == "0x..." else value for name, value in payload.items()}


@pytest.fixture
def reference_copy(tmp_path: Path, unique_name: str, kafka_admin: Any) -> Iterator[Path]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "topology.yaml").read_text())
    document["name"] = unique_name
    document["naming"] = {"topic": "{topology}.{event_type}.{chain_id}"}
    document["consumer_groups"] = {}  # only the event topics: nothing here consumes
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    yield path
    delete_topology_leftovers(kafka_admin, unique_name)
    shutil.rmtree(tmp_path / "generated", ignore_errors=True)


def topo(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments), catch_exceptions=False)


def test_the_spec_has_the_examples_this_test_reads() -> None:
    payloads, envelope = spec_blocks()
    assert sorted(payloads) == ["block.new", "contract.verified", "token.transfer", "transaction.confirmed"]
    assert '"event_type": "block.new"' in envelope


def test_the_spec_examples_publish_with_topo_publish(reference_copy: Path, kafka_bootstrap: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    payloads, envelope = spec_blocks()
    topology = load_topology(reference_copy)
    t = str(reference_copy)
    assert topo("generate", "-t", t, "-o", str(reference_copy.parent / "generated")).exit_code == 0
    applied = topo("apply", "-t", t, "--broker", "kafka", "--yes")
    assert applied.exit_code == 0, applied.output
    published: dict[str, str] = {}
    for event_type, example in payloads.items():
        types = {field.name: field.type for field in topology.event(event_type).payload}
        payload = json.dumps(filled(example, types))
        result = topo("publish", event_type, "-t", t, "--payload", payload, "--json")
        assert result.exit_code == 0, f"{event_type} {payload}: {result.output}"
        published[event_type] = json.loads(result.stdout)["event_id"]

    tail = topo("tail", "block.new", "-t", t, "--chain", "138", "--from-beginning", "--limit", "1", "--raw",
                "--timeout", "120")
    assert tail.exit_code == 0, tail.output
    event = json.loads(tail.stdout.splitlines()[0])
    # The envelope has the spec's shape: the same keys, the same metadata, the example payload verbatim.
    spec_keys = re.findall(r'"(\w+)":', envelope)
    assert sorted(event) == sorted(key for key in spec_keys if key not in ("producer", "version"))
    assert event["event_id"] == published["block.new"]
    assert event["event_type"] == "block.new" and event["chain_id"] == 138
    assert event["metadata"] == {"producer": "indexer", "version": "1.0"}
    given = {name: value for name, value in event["payload"].items() if value is not None}  # optional: null
    assert given == payloads["block.new"] | {"hash": PLACEHOLDERS[FieldType.HASH32]}
