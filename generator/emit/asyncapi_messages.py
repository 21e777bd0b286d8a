"""The AsyncAPI document's components: one message per event type, its schemas and the envelope trait.

Payloads are the generated JSON Schemas themselves (`schemas` emitter), embedded under
`components.schemas` so the document stands alone; their `$schema` / `$id` are left out because an
embedded schema takes the document's schema format (AsyncAPI Schema, a superset of draft-07, which
every keyword these schemas use belongs to). The envelope trait gives every message the content
type and the schema of topo's message headers (`topo.core.headers`).
"""

from __future__ import annotations

from typing import Any

from topo.core import headers as hdr
from topo.core.model import Topology
from topo.generator.emit.schemas import envelope_schema, event_schema

CONTENT_TYPE = "application/json"
KAFKA_BINDING = "0.5.0"
AMQP_BINDING = "0.3.0"
ENVELOPE_TRAIT = "envelope"
HEADERS_SCHEMA = "Headers"
ENVELOPE_SCHEMA = "Envelope"  # capitalised: never an event name

# Every header topo writes, with when it is there. All are text; none is required on every broker.
HEADERS: tuple[tuple[str, str], ...] = (
    (hdr.KEY, "The ordering key as text; set on every RabbitMQ message (the consistent-hash exchange hashes on "
              "it); on Kafka the key is the record key."),
    (hdr.ORIGINAL_TOPIC, "Retry copies and dead letters: Kafka topic or RabbitMQ routing key the event was "
                         "first read from."),
    (hdr.ORIGINAL_PARTITION, "Retry copies and dead letters: Kafka partition or RabbitMQ work queue index."),
    (hdr.ORIGINAL_OFFSET, "Retry copies and dead letters: Kafka offset or RabbitMQ delivery tag."),
    (hdr.GROUP, "Retry copies and dead letters: the consumer group that failed to handle the event."),
    (hdr.ATTEMPT, "Retry copies and dead letters: handler attempts made so far."),
    (hdr.ERROR_CLASS, "Retry copies and dead letters: qualified class name of the last exception."),
    (hdr.ERROR_MESSAGE, f"Retry copies and dead letters: the last exception's message (at most "
                        f"{hdr.MAX_ERROR_MESSAGE} characters)."),
    (hdr.FIRST_FAILURE, "Retry copies and dead letters: RFC 3339 UTC time of the first failed attempt."),
    (hdr.LAST_FAILURE, "Retry copies and dead letters: RFC 3339 UTC time of the last failed attempt."),
    (hdr.RETRY_DUE_MS, "Retry copies: when the copy becomes due, in epoch milliseconds."),
    (hdr.RETRY_DELAY, "Retry copies: the delay the copy waits, in seconds."),
    (hdr.DEAD_LETTER_REASON, f"Dead letters: `{hdr.REASON_MAX_RETRIES}` or `{hdr.REASON_POISON}`."),
    (hdr.REPLAYED_AT, "Replayed events (`topo dlq replay`): RFC 3339 UTC time of the replay."),
    (hdr.REPLAYED_FROM, "Replayed events: the dead-letter topic or queue the event was taken from."),
)


def message_ref(event: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{event}"}


def embedded(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key not in ("$schema", "$id")}


def headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Message headers topo writes (Kafka record headers, AMQP headers); other headers may "
                       "be present.",
        "properties": {name: {"type": "string", "description": meaning} for name, meaning in HEADERS},
    }


def message(topology: Topology, name: str) -> dict[str, Any]:
    event = topology.event(name)
    entry: dict[str, Any] = {"name": event.name, "title": f"{event.class_name}Event"}
    if event.description:
        entry["summary"] = event.description
    entry["description"] = (f"The standard envelope with a {event.class_name} payload (schema version "
                            f"{event.version}), produced by {', '.join(event.producers)}; ordering key: the "
                            f"payload's `{event.key}`{' (handled in key order)' if event.ordered else ''}.")
    entry["payload"] = {"$ref": f"#/components/schemas/{event.name}"}
    entry["traits"] = [{"$ref": f"#/components/messageTraits/{ENVELOPE_TRAIT}"}]
    entry["bindings"] = {"kafka": {
        "key": {"type": "string", "description": f"The payload's `{event.key}` as text."},
        "bindingVersion": KAFKA_BINDING,
    }}
    return entry


def components(topology: Topology, security_schemes: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = {ENVELOPE_SCHEMA: embedded(envelope_schema(topology)), HEADERS_SCHEMA: headers_schema()}
    for event in topology.events:
        schemas[event.name] = embedded(event_schema(topology, event))
    return {
        "schemas": schemas,
        "messages": {event.name: message(topology, event.name) for event in topology.events},
        "messageTraits": {ENVELOPE_TRAIT: {
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
        }},
        "securitySchemes": security_schemes,
    }
