"""generated/schemas/: JSON Schemas (draft 2020-12) of the envelope and of every event.

For consumers that are not written in Python; they describe exactly what the generated pydantic
classes accept when publishing (both read `fieldtypes`); `x-topo-reader` says whether readers also
accept payload fields they do not know (`tolerant`) or not (`strict`).
"""

from __future__ import annotations

import json
from typing import Any

from topo.core.model import EventType, Topology
from topo.generator.emit.fieldtypes import DATETIME_PATTERN, json_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def schema_id(topology: Topology, name: str) -> str:
    return f"urn:topo:{topology.name}:schemas:{name}"


def envelope_properties(event_type: dict[str, Any], chain_id: dict[str, Any], payload: dict[str, Any]
                        ) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "event_id": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
        "timestamp": {"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN,
                      "description": "RFC 3339 timestamp in UTC"},
        "chain_id": chain_id,
        "payload": payload,
        "metadata": {
            "type": "object",
            "properties": {"producer": {"type": "string"}, "version": {"type": "string"}},
            "required": ["producer", "version"],
            "additionalProperties": False,
        },
    }


def envelope_schema(topology: Topology) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": schema_id(topology, "envelope"),
        "title": f"{topology.name} event envelope",
        "description": "The standard format of every event on the bus; `payload` depends on `event_type`.",
        "type": "object",
        "properties": envelope_properties(
            {"type": "string", "enum": [event.name for event in topology.events]},
            {"type": "integer", "enum": [chain.id for chain in topology.chains]},
            {"type": "object"},
        ),
        "required": ["event_type", "event_id", "timestamp", "chain_id", "payload", "metadata"],
        "additionalProperties": False,
    }


def payload_schema(event: EventType) -> dict[str, Any]:
    chains = [topic.chain_id for topic in event.topics]
    properties = {field.name: json_schema(field) for field in event.payload}
    properties["chain_id"] = {**properties["chain_id"], "enum": chains}
    return {
        "type": "object",
        "title": event.class_name,
        "description": event.description,
        "properties": properties,
        "required": [field.name for field in event.payload if field.required],
        "additionalProperties": False,
        "x-topo-key": event.key,
        "x-topo-ordered": event.ordered,
        # What a producer may write is `additionalProperties: false`; a tolerant reader also
        # accepts (and ignores) fields it does not know.
        "x-topo-reader": event.reader.value,
    }


def event_schema(topology: Topology, event: EventType) -> dict[str, Any]:
    chains = [topic.chain_id for topic in event.topics]
    return {
        "$schema": DRAFT,
        "$id": schema_id(topology, event.name),
        "title": f"{event.name} event",
        "description": event.description,
        "type": "object",
        "properties": envelope_properties({"const": event.name}, {"type": "integer", "enum": chains},
                                          payload_schema(event)),
        "required": ["event_type", "event_id", "timestamp", "chain_id", "payload", "metadata"],
        "additionalProperties": False,
    }


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def emit(topology: Topology) -> dict[str, str]:
    files = {"schemas/envelope.schema.json": dump(envelope_schema(topology))}
    for event in topology.events:
        files[f"schemas/{event.name}.schema.json"] = dump(event_schema(topology, event))
    return files
