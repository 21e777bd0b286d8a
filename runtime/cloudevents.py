"""CloudEvents 1.0 in binary content mode: topo's events written as CloudEvents, and read back.

An event type with `envelope: cloudevents` is published with its attributes in headers (Kafka
`ce_*` plus `content-type`; RabbitMQ `ce-*`, the content type in the AMQP property) and the
payload JSON, byte for byte what the topo envelope holds as `payload`, as the data:

| attribute | value |
| --- | --- |
| `specversion` | `1.0` |
| `id` | the `event_id` (a UUID) |
| `source` | `/topo/<topology>/<producer>` (`topo.core.names.cloudevents_source`) |
| `type` | the event type, e.g. `token.transfer` |
| `time` | the envelope's `timestamp` |
| `chainid` | the chain id (extension) |
| `datacontenttype` | `application/json` |

Consumers read both forms whatever the setting: a message carrying a CloudEvents `id` header (any of
the prefixes in `topo.core.headers.CLOUDEVENTS_PREFIXES`) is turned into the topo envelope before the
usual decoding. Its `event_id` is the CloudEvent's `id` when the source is one of this topology's
producers (topo wrote it), otherwise a UUID derived from source and id (uuid5), so that deduplicating
on `event_id` deduplicates on source + id, as CloudEvents defines an event's identity.
`metadata.producer` is the producer (or the foreign source), `metadata.version` the event type's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from topo.core import headers as H
from topo.core.model import Topology
from topo.core.names import cloudevents_producer, cloudevents_source
from topo.runtime.transport.base import Delivery

JSON_CONTENT = "application/json"
REQUIRED = ("id", "source", "type", "specversion")
# uuid5 namespace of the event ids of CloudEvents that other sources wrote: (source, id) -> event_id.
FOREIGN_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:topo:cloudevents")


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    return not H.CLOUDEVENTS_ID_HEADERS.isdisjoint(headers)


def attributes_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The CloudEvents attributes among `headers`, by attribute name."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        for prefix in H.CLOUDEVENTS_PREFIXES:
            if name.startswith(prefix):
                found[name[len(prefix):].lower()] = value
                break
    return found


class CloudEventsWriter:
    """The CloudEvents headers of one producer's events (see the module docstring)."""

    def __init__(self, topology: Topology, producer: str, prefix: str, content_type_header: str | None) -> None:
        self.source = cloudevents_source(topology.name, producer)
        self.prefix = prefix
        constant = {"specversion": H.CLOUDEVENTS_SPECVERSION, "source": self.source}
        self._constant = {prefix + name: value for name, value in constant.items()}
        if content_type_header is not None:
            self._constant[content_type_header] = JSON_CONTENT

    def headers(self, event_type: str, event_id: str, time: str, chain_id: int,
                extra: Mapping[str, str] | None) -> dict[str, str]:
        prefix = self.prefix
        result = dict(extra) if extra else {}
        result.update(self._constant)
        result[prefix + "id"] = event_id
        result[prefix + "type"] = event_type
        result[prefix + "time"] = time
        result[prefix + H.CLOUDEVENTS_CHAIN_ID] = str(chain_id)
        return result


class CloudEventsReader:
    """Turns a CloudEvent in binary content mode into the bytes of the topo envelope."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology.name
        self.versions = {event.name: event.version for event in topology.events}

    def envelope(self, delivery: Delivery) -> bytes:
        """The envelope JSON of `delivery`; ValueError (the event is poison) naming what is wrong."""
        attributes = attributes_of(delivery.headers)
        missing = [name for name in REQUIRED if not attributes.get(name)]
        if missing:
            raise ValueError(f"CloudEvent without the required attribute(s) {', '.join(missing)}")
        if attributes["specversion"] != H.CLOUDEVENTS_SPECVERSION:
            raise ValueError(f"CloudEvent specversion {attributes['specversion']!r}: topo reads "
                             f"{H.CLOUDEVENTS_SPECVERSION}")
        content_type = attributes.get("datacontenttype") or delivery.headers.get(H.CONTENT_TYPE)
        if content_type and not content_type.split(";")[0].strip().lower().endswith("json"):
            raise ValueError(f"CloudEvent data of content type {content_type!r}: topo reads JSON data")
        kind = attributes["type"]
        version = self.versions.get(kind)
        if version is None:
            raise ValueError(f"CloudEvent type {kind!r} is not an event type of topology {self.topology} "
                             f"(declared: {', '.join(sorted(self.versions))})")
        source, ident = attributes["source"], attributes["id"]
        producer = cloudevents_producer(self.topology, source)
        event_id = ident if producer is not None and _is_uuid(ident) else str(uuid.uuid5(FOREIGN_IDS,
                                                                                           f"{source}\n{ident}"))
        time = attributes.get("time") or H.format_time(
            datetime.fromtimestamp(delivery.timestamp, UTC) if delivery.timestamp else datetime.now(UTC))
        chain = attributes.get(H.CLOUDEVENTS_CHAIN_ID)
        chain_id = _chain_id(chain, delivery.body)
        metadata = {"producer": producer or source, "version": version}
        return b"".join((
            b'{"event_type":', json.dumps(kind).encode(), b',"event_id":', json.dumps(event_id).encode(),
            b',"timestamp":', json.dumps(time).encode(), b',"chain_id":', str(chain_id).encode(),
            b',"payload":', delivery.body, b',"metadata":', json.dumps(metadata, separators=(",", ":")).encode(),
            b"}",
        ))

    def event_id(self, delivery: Delivery) -> str | None:
        """The `event_id` topo gives the CloudEvent in `delivery` (None when it is not readable)."""
        try:
            return str(json.loads(self.envelope(delivery))["event_id"])
        except ValueError:
            return None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _chain_id(attribute: str | None, body: bytes) -> int:
    """The `chainid` extension, else the payload's `chain_id`."""
    if attribute is not None:
        try:
            return int(attribute)
        except ValueError:
            raise ValueError(f"CloudEvent chainid {attribute!r} is not an integer") from None
    try:
        value = json.loads(body).get("chain_id")
    except (ValueError, AttributeError):
        raise ValueError("CloudEvent data is not a JSON object") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("CloudEvent without a chainid attribute nor an integer chain_id in its data")
    return value
