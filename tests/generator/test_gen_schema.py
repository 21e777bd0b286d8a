"""The JSON Schema of topology.yaml: valid, shipped as package data, usable as editors use it."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml
from gen_support import REFERENCE, SECOND

from topo.core.durations import DURATION
from topo.core.model import FieldType
from topo.generator import resolve
from topo.generator.schema import SCHEMA_PATH, topology_schema


def as_json(value: Any) -> Any:
    # What an editor's YAML language server hands to the schema: every mapping key is a string.
    if isinstance(value, dict):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def test_the_schema_is_valid_draft_2020_12() -> None:
    schema = topology_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_ships_as_package_data() -> None:
    shipped = resources.files("topo.generator.schema").joinpath("topology.schema.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == topology_schema()


def test_the_reference_topology_names_the_schema_for_editors() -> None:
    first_line = REFERENCE.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first_line)
    assert match, first_line
    assert (REFERENCE.parent / match.group(1)).resolve() == SCHEMA_PATH.resolve()
    second = SECOND.read_text(encoding="utf-8").splitlines()[0]
    assert (SECOND.parent / second.split("$schema=")[1]).resolve() == SCHEMA_PATH.resolve()


@pytest.mark.parametrize("path", [REFERENCE, SECOND], ids=["reference", "second"])
def test_valid_topologies_pass_the_plain_schema(path: Any) -> None:
    document = as_json(yaml.safe_load(path.read_text(encoding="utf-8")))
    jsonschema.Draft202012Validator(topology_schema()).validate(document)


def test_every_object_forbids_unknown_keys() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"]):
                assert "additionalProperties" in node, f"{where} allows unknown keys"
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(topology_schema(), "#")


def test_schema_defaults_match_the_resolver() -> None:
    defs = topology_schema()["$defs"]
    assert defs["partitions"]["default"] == resolve.DEFAULT_PARTITIONS
    assert defs["maxInFlight"]["default"] == resolve.DEFAULT_MAX_IN_FLIGHT
    assert defs["dedup"]["properties"]["capacity"]["default"] == resolve.DEFAULT_DEDUP_CAPACITY
    retry = defs["retry"]["properties"]
    for key, value in resolve.DEFAULT_RETRY.items():
        assert retry[key]["default"] == value, key
    alerts = defs["alerts"]["properties"]
    for section, values in resolve.DEFAULT_ALERTS.items():
        for key, value in values.items():
            assert alerts[section]["properties"][key]["default"] == value, (section, key)
    assert topology_schema()["properties"]["naming"]["$ref"] == "#/$defs/naming"
    assert defs["naming"]["properties"]["topic"]["default"] == resolve.DEFAULT_TOPIC_NAMING
    assert defs["typeName"]["enum"] == [t.value for t in FieldType]


def test_the_duration_pattern_is_the_resolvers() -> None:
    pattern = re.compile(topology_schema()["$defs"]["duration"]["pattern"])
    for text in ("500ms", "1s", "5m", "1h30m", "7d", "2w", "1.5s", "1 s", "s", "5x", "-1s", ""):
        assert bool(pattern.search(text)) == bool(DURATION.match(text)), text
