"""The generated event classes and JSON Schemas: lint-clean, strict, and faithful to the spec."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pydantic
import pytest
import yaml

from topo.core.model import Topology
from topo.generator.emit import events as events_emitter
from topo.generator.emit import schemas as schemas_emitter
from topo.generator.resolve import resolve

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

ADDRESS_A = "0x" + "ab" * 20
ADDRESS_B = "0x" + "cd" * 20
ADDRESS_C = "0x" + "ef" * 20
HASH = "0x" + "12" * 32

# The spec's example payloads, with its "0x..." placeholders filled in.
SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "block.new": {"chain_id": 138, "block_number": 12345, "hash": HASH,
                  "timestamp": "2024-01-01T00:00:00Z", "transaction_count": 100},
    "transaction.confirmed": {"chain_id": 138, "hash": HASH, "block_number": 12345, "from_address": ADDRESS_A,
                              "to_address": ADDRESS_B, "status": "success"},
    "transaction.pending": {"chain_id": 1, "hash": HASH, "from_address": ADDRESS_A, "to_address": ADDRESS_B,
                            "nonce": 7, "value": "0", "gas": 21000, "max_fee_per_gas": "30000000000",
                            "max_priority_fee_per_gas": "1000000000", "first_seen": "2024-01-01T00:00:01Z"},
    "token.transfer": {"chain_id": 138, "token_address": ADDRESS_C, "from_address": ADDRESS_A,
                       "to_address": ADDRESS_B, "amount": "1000000000000000000", "transaction_hash": HASH},
    "contract.verified": {"chain_id": 138, "address": ADDRESS_C, "verification_status": "verified",
                          "verified_at": "2024-01-01T00:00:00Z"},
}

SECOND = """
version: 1
name: shipping
broker: {kind: rabbitmq}
chains: {10: {name: optimism}}
events:
  parcel.scanned:
    producers: [scanner]
    key: parcel_id
    reader: strict
    payload:
      parcel_id: {type: string, min_length: 4, max_length: 32, pattern: "^[A-Z0-9-]+$"}
      weight_kg: {type: number, minimum: 0}
      fragile: boolean
      tags: {type: array, items: {type: enum, values: [cold, hazmat, "2-day"]}, max_length: 3}
      checksum: hex
      class: {type: enum, values: [a, b]}
consumer_groups:
  tracker: {subscribes: [parcel.scanned]}
"""


def compile_module(topology: Topology, directory: Path) -> tuple[Path, ModuleType]:
    (path, text), = events_emitter.emit(topology).items()
    target = directory / Path(path).name
    target.write_text(text)
    spec = importlib.util.spec_from_file_location(f"{topology.events_module}_{uuid.uuid4().hex}", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return target, module


@pytest.fixture(scope="module")
def explorer() -> Topology:
    return resolve(yaml.safe_load((ROOT / "topology.yaml").read_text()))


@pytest.fixture(scope="module")
def explorer_module(explorer: Topology, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType]:
    return compile_module(explorer, tmp_path_factory.mktemp("explorer"))


def envelope(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_type": event_type, "event_id": str(uuid.uuid4()), "timestamp": "2024-01-01T00:00:00Z",
            "chain_id": payload["chain_id"], "payload": payload,
            "metadata": {"producer": "indexer", "version": "1.0"}}


@pytest.mark.parametrize("topology_text", [None, SECOND], ids=["explorer", "second"])
def test_generated_module_passes_ruff_and_mypy_strict(topology_text: str | None, explorer: Topology,
                                                      tmp_path: Path) -> None:
    topology = explorer if topology_text is None else resolve(yaml.safe_load(topology_text))
    path, _ = compile_module(topology, tmp_path)
    config = str(ROOT / "pyproject.toml")
    ruff = subprocess.run([str(VENV_BIN / "ruff"), "check", "--config", config, str(path)],
                          capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = subprocess.run([str(VENV_BIN / "mypy"), "--strict", "--no-incremental", "--config-file", "/dev/null",
                           str(path)], capture_output=True, text=True)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr


@pytest.mark.parametrize("event_type", sorted(SPEC_EXAMPLES))
def test_spec_examples_round_trip(event_type: str, explorer_module: tuple[Path, ModuleType]) -> None:
    module = explorer_module[1]
    payload = SPEC_EXAMPLES[event_type]
    parsed = module.EVENT_TYPES[event_type].model_validate_json(json.dumps(payload))
    assert parsed.model_dump(mode="json", exclude_none=True) == payload
    document = envelope(event_type, payload)
    event = module.ENVELOPES[event_type].model_validate_json(json.dumps(document))
    assert json.loads(event.model_dump_json(exclude_none=True)) == document
    assert isinstance(event.payload, module.EVENT_TYPES[event_type])


@pytest.mark.parametrize(("event_type", "change", "reason"), [
    ("token.transfer", {"amount": str(2**256)}, "largest uint256"),
    ("token.transfer", {"amount": "2" + "0" * 77}, "largest uint256"),
    ("token.transfer", {"amount": "9" * 78}, "largest uint256"),
    ("token.transfer", {"amount": "1" * 79}, "pattern"),
    ("token.transfer", {"amount": "01"}, "pattern"),
    ("token.transfer", {"amount": "-1"}, "pattern"),
    ("token.transfer", {"amount": 1000}, "string"),
    ("token.transfer", {"from_address": "0x1234"}, "pattern"),
    ("token.transfer", {"chain_id": 5}, "chain 5 is not declared for token.transfer \\(1, 138\\)"),
    ("block.new", {"hash": "0x" + "1" * 63}, "pattern"),
    ("block.new", {"block_number": "12345"}, "integer"),
    ("block.new", {"block_number": -1}, "greater than or equal"),
    ("block.new", {"timestamp": "2024-01-01T00:00:00"}, "timezone"),
    ("transaction.confirmed", {"status": "pending"}, "success"),
])
def test_invalid_payloads_are_rejected(event_type: str, change: dict[str, Any], reason: str,
                                       explorer_module: tuple[Path, ModuleType], explorer: Topology) -> None:
    payload = {**SPEC_EXAMPLES[event_type], **change}
    with pytest.raises(pydantic.ValidationError, match=reason):
        explorer_module[1].EVENT_TYPES[event_type].model_validate_json(json.dumps(payload))
    schema = json.loads(schemas_emitter.emit(explorer)[f"schemas/{event_type}.schema.json"])
    validator = jsonschema.Draft202012Validator(schema)
    if "largest uint256" not in reason:  # JSON Schema cannot bound a decimal string's value
        assert list(validator.iter_errors(envelope(event_type, payload))), "JSON Schema accepted it"


def test_timestamps_are_normalised_to_utc(explorer_module: tuple[Path, ModuleType]) -> None:
    payload = {**SPEC_EXAMPLES["contract.verified"], "verified_at": "2024-01-01T02:00:00+02:00"}
    parsed = explorer_module[1].ContractVerified.model_validate_json(json.dumps(payload))
    assert parsed.model_dump(mode="json", exclude_none=True)["verified_at"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize("given", [
    "2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.5+00:00", "2024-01-01T00:00:00.5-00:00",
    "2024-01-01T02:00:00.5+02:00", "2023-12-31T19:00:00.5-05:00", 1704067200.5,
    datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=ZoneInfo("UTC")),
    datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=ZoneInfo("Europe/London")),  # zero offset, but not UTC in summer
    datetime(2024, 1, 1, 1, 0, 0, 500000, tzinfo=timezone(timedelta(hours=1))),
])
def test_every_timestamp_becomes_the_same_utc_value(given: Any, explorer_module: tuple[Path, ModuleType]) -> None:
    """Whatever the offset or zone, the value is that instant with a fixed zero offset (the already-UTC
    ones are kept as parsed, the others converted): it compares, hashes, serialises and adds alike."""
    module = explorer_module[1]
    payload = {**SPEC_EXAMPLES["contract.verified"], "verified_at": given}
    expected = datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    parsed = [module.ContractVerified.model_validate(payload)]
    if not isinstance(given, datetime):
        parsed.append(module.ContractVerified.model_validate_json(json.dumps(payload)))
    for item in parsed:
        value = item.verified_at
        assert value == expected and hash(value) == hash(expected) and value.timestamp() == expected.timestamp()
        assert value.utcoffset() == timedelta(0) and (value + timedelta(days=180)).utcoffset() == timedelta(0)
        assert value.tzinfo == UTC
        assert json.loads(item.model_dump_json())["verified_at"] == "2024-01-01T00:00:00.500000Z"
    envelope_document = {**envelope("contract.verified", SPEC_EXAMPLES["contract.verified"]), "timestamp": given}
    event = module.ContractVerifiedEvent.model_validate(envelope_document)
    assert event.timestamp == expected and (event.timestamp + timedelta(days=180)).utcoffset() == timedelta(0)


@pytest.mark.parametrize("given", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_out_of_range_in_utc_is_a_validation_error(given: str,
                                                               explorer_module: tuple[Path, ModuleType]) -> None:
    module = explorer_module[1]
    document = {**envelope("block.new", SPEC_EXAMPLES["block.new"]), "timestamp": given}
    with pytest.raises(pydantic.ValidationError, match="out of range once converted to UTC"):
        module.ENVELOPES["block.new"].model_validate_json(json.dumps(document))


@pytest.mark.parametrize("chain_id", [True, 1.0, "1", "138", None])
def test_chain_id_is_a_strict_integer(chain_id: Any, explorer_module: tuple[Path, ModuleType]) -> None:
    module = explorer_module[1]
    payload = {**SPEC_EXAMPLES["token.transfer"], "chain_id": chain_id}
    with pytest.raises(pydantic.ValidationError, match="valid integer"):
        module.TokenTransfer.model_validate_json(json.dumps(payload))
    with pytest.raises(pydantic.ValidationError, match="valid integer"):
        module.TokenTransfer.model_validate(payload)


def test_uint256_bounds(explorer_module: tuple[Path, ModuleType]) -> None:
    module = explorer_module[1]
    for amount in ("0", "9" * 77, "1" + "0" * 77, str(2**255), str(2**256 - 2), str(2**256 - 1)):
        payload = {**SPEC_EXAMPLES["token.transfer"], "amount": amount}
        assert module.TokenTransfer.model_validate_json(json.dumps(payload)).amount == amount
    for amount in (str(2**256), str(2**256 + 10**40), "9" * 78):
        payload = {**SPEC_EXAMPLES["token.transfer"], "amount": amount}
        with pytest.raises(pydantic.ValidationError, match=r"exceeds the largest uint256 \(2\*\*256 - 1\)"):
            module.TokenTransfer.model_validate(payload)


def test_envelope_must_agree_with_its_payload(explorer_module: tuple[Path, ModuleType]) -> None:
    module = explorer_module[1]
    document = envelope("block.new", SPEC_EXAMPLES["block.new"])
    with pytest.raises(pydantic.ValidationError, match="differs"):
        module.ENVELOPES["block.new"].model_validate_json(json.dumps({**document, "chain_id": 1}))
    with pytest.raises(pydantic.ValidationError):
        module.ENVELOPES["block.new"].model_validate_json(json.dumps({**document, "event_type": "token.transfer"}))


def test_readers_keep_unknown_fields_apart(explorer_module: tuple[Path, ModuleType], explorer: Topology) -> None:
    """A tolerant reader (the default) accepts a field a newer producer added, outside the typed fields."""
    module = explorer_module[1]
    payload = {**SPEC_EXAMPLES["contract.verified"], "compiler": "solc-0.8.26"}
    event = module.ENVELOPES["contract.verified"].model_validate_json(json.dumps(envelope("contract.verified",
                                                                                          payload)))
    assert event.payload.model_extra == {"compiler": "solc-0.8.26"}
    assert "compiler" not in type(event.payload).model_fields
    schema = json.loads(schemas_emitter.emit(explorer)["schemas/contract.verified.schema.json"])
    assert schema["properties"]["payload"]["x-topo-reader"] == "tolerant"


@pytest.mark.parametrize("event_type", sorted(SPEC_EXAMPLES))
def test_json_schemas_accept_the_spec_examples(event_type: str, explorer: Topology) -> None:
    files = schemas_emitter.emit(explorer)
    document = envelope(event_type, SPEC_EXAMPLES[event_type])
    for name in (f"schemas/{event_type}.schema.json", "schemas/envelope.schema.json"):
        schema = json.loads(files[name])
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


def test_second_topology_types(tmp_path: Path) -> None:
    _, module = compile_module(resolve(yaml.safe_load(SECOND)), tmp_path)
    good = {"chain_id": 10, "parcel_id": "AB-12", "weight_kg": 1.5, "fragile": False, "tags": ["cold", "2-day"],
            "checksum": "0xbeef", "class": "a"}
    parsed = module.ParcelScanned.model_validate_json(json.dumps(good))
    assert parsed.model_dump(mode="json") == good
    for bad in ({"fragile": 1}, {"tags": ["cold"] * 4}, {"checksum": "0xabc"}, {"parcel_id": "ab"},
                {"weight_kg": -1}, {"class": "c"}, {"colour": "red"}):
        with pytest.raises(pydantic.ValidationError):
            module.ParcelScanned.model_validate_json(json.dumps({**good, **bad}))
