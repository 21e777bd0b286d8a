"""Publishing typed events: validate, wrap in the standard envelope, route, hand to a transport."""

from __future__ import annotations

import difflib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from uuid import UUID

from pydantic import BaseModel, ValidationError

from topo.core.model import EnvelopeFormat, EventTopic, Topology
from topo.runtime.cloudevents import CloudEventsWriter
from topo.runtime.events import EventClasses, key_attribute
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.payload_errors import FieldProblem, field_problems, quoted
from topo.runtime.tracing import Tracing
from topo.runtime.transport.base import DeliveryReport, PublisherTransport


class PublishError(ValueError):
    """The event cannot be published as given; nothing was sent. An invalid payload carries one
    `problems` entry per field (`payload.block_number: must be >= 0 (got -5)`)."""

    def __init__(self, message: str, problems: tuple[FieldProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Route:
    event: str
    topics: Mapping[int, EventTopic]  # chain id -> topic
    key_attribute: str
    version: str
    prefix: bytes  # '{"event_type":"...","event_id":"' : the constant head of the envelope
    cloudevents: bool = False  # `envelope: cloudevents`: binary content mode (topo.runtime.cloudevents)


@dataclass(frozen=True, slots=True)
class Published:
    """What `publish` sent: the envelope's identity and where it went."""

    event_id: UUID
    event_type: str
    chain_id: int
    key: str
    topic: EventTopic


def validated_payload(classes: EventClasses, event_type: str, payload: Mapping[str, Any]) -> BaseModel:
    """`payload` as an instance of `event_type`'s generated class (no broker needed: `topo publish` checks a
    payload before it connects); PublishError with one `problems` entry per invalid field otherwise."""
    payload_class = classes.payloads.get(event_type)
    if payload_class is None:
        raise PublishError(f"undeclared event type {event_type!r}; declared: {', '.join(sorted(classes.payloads))}")
    known = known_fields(payload_class)
    # The classes read tolerantly (unknown fields kept in model_extra); a writer stays strict.
    unknown = [unknown_field(name, payload[name], known) for name in payload if name not in known]
    try:
        instance = payload_class.model_validate(payload)
    except ValidationError as error:
        problems = field_problems(error, known_fields=list(payload_class.model_fields))
        refuse(event_type, (*problems, *(p for p in unknown if p.field not in {q.field for q in problems})))
    if unknown:
        refuse(event_type, tuple(unknown))
    return instance


def known_fields(payload_class: type[BaseModel]) -> frozenset[str]:
    """Every name a payload field may be given by: its JSON name (alias) and its attribute."""
    return frozenset(name for attribute, info in payload_class.model_fields.items()
                     for name in (attribute, info.alias) if name)


def unknown_field(name: str, value: Any, known: frozenset[str]) -> FieldProblem:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return FieldProblem(f"payload.{name}", "unknown field" + (f"; did you mean {close[0]!r}?" if close else ""),
                        quoted(value))


def refuse(event_type: str, problems: tuple[FieldProblem, ...]) -> NoReturn:
    raise PublishError(f"invalid {event_type} payload: {'; '.join(map(str, problems))}", problems) from None


def utc_timestamp(now: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2024-01-01T00:00:00.000000Z."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Envelopes:
    """Builds the standard envelope of a payload: validates the event type and chain against the
    topology, and writes `{event_type, event_id, timestamp, chain_id, payload, metadata.producer,
    version}` as bytes, with the topic and key it goes to. Shared by `Publisher` and by handlers'
    `context.publish` (whose producer is the consumer group). Thread-safe (no mutable state)."""

    def __init__(self, topology: Topology, classes: EventClasses, producer: str) -> None:
        self.topology = topology
        self.classes = classes
        self.producer = producer
        self._metadata = json.dumps({"producer": producer}, separators=(",", ":"))[:-1].encode()
        self.routes: dict[str, Route] = {}
        for event in topology.events:
            payload_class = classes.payloads[event.name]
            head = json.dumps({"event_type": event.name}, separators=(",", ":"))[:-1]
            self.routes[event.name] = Route(
                event=event.name,
                topics={topic.chain_id: topic for topic in event.topics},
                key_attribute=key_attribute(payload_class, event.key),
                version=json.dumps(event.version),
                prefix=(head + ',"event_id":"').encode(),
                cloudevents=event.envelope is EnvelopeFormat.CLOUDEVENTS,
            )

    def build(self, payload: BaseModel | Mapping[str, Any], chain_id: int | None = None, *,
              event_type: str | None = None, event_id: UUID | None = None) -> tuple[Published, bytes]:
        """What `Publisher.publish` sends, and where; PublishError as it describes."""
        published, body, _ = self.build_with_headers(payload, chain_id, event_type=event_type, event_id=event_id)
        return published, body

    def build_with_headers(self, payload: BaseModel | Mapping[str, Any], chain_id: int | None = None, *,
                           event_type: str | None = None, event_id: UUID | None = None,
                           headers: Mapping[str, str] | None = None, cloudevents: CloudEventsWriter | None = None
                           ) -> tuple[Published, bytes, Mapping[str, str] | None]:
        """`build`, and the headers to send: with `cloudevents`, an event type declared `envelope: cloudevents`
        is written in binary content mode (the payload JSON as data, attributes added to `headers`)."""
        payload = self.payload(payload, event_type)
        kind = type(payload).EVENT_TYPE  # type: ignore[attr-defined]
        route = self.routes[kind]
        payload_chain: int = payload.chain_id  # type: ignore[attr-defined]
        if chain_id is not None and chain_id != payload_chain:
            raise PublishError(f"{kind}: chain_id={chain_id} differs from the payload's chain_id={payload_chain}")
        topic = route.topics.get(payload_chain)
        if topic is None:
            raise PublishError(f"{kind} is not declared on chain {payload_chain}; declared chains: "
                               f"{', '.join(str(c) for c in route.topics)} (see topology.yaml `chains`)")
        key_value = getattr(payload, route.key_attribute)
        key = "" if key_value is None else str(key_value)
        identity = event_id or uuid.uuid4()
        published = Published(event_id=identity, event_type=kind, chain_id=payload_chain, key=key, topic=topic)
        if route.cloudevents and cloudevents is not None:  # the payload JSON as data, the rest as attributes
            headers = cloudevents.headers(kind, str(identity), utc_timestamp(time.time()), payload_chain, headers)
            return published, payload.model_dump_json().encode(), headers
        body = b"".join((
            route.prefix, str(identity).encode(), b'","timestamp":"', utc_timestamp(time.time()).encode(),
            b'","chain_id":', str(payload_chain).encode(), b',"payload":', payload.model_dump_json().encode(),
            b',"metadata":', self._metadata, b',"version":', route.version.encode(), b"}}",
        ))
        return published, body, headers

    def payload(self, payload: BaseModel | Mapping[str, Any], event_type: str | None) -> BaseModel:
        """`payload` as a validated instance of its generated class."""
        if isinstance(payload, BaseModel):
            try:
                kind = self.classes.event_type_of(payload)
            except TypeError as error:
                raise PublishError(str(error)) from None
            if event_type is not None and event_type != kind:
                raise PublishError(f"event_type={event_type!r} but the payload is a {kind} payload")
            if kind not in self.routes:
                raise PublishError(f"event type {kind!r} is not declared in topology {self.topology.name}")
            if payload.model_extra:  # a tolerant reader's instance, or one built with unknown fields
                known = known_fields(type(payload))
                refuse(kind, tuple(unknown_field(name, value, known) for name, value in payload.model_extra.items()))
            return payload
        if event_type is None:
            raise PublishError("a payload given as a mapping needs event_type=...")
        if event_type not in self.routes:
            raise PublishError(f"undeclared event type {event_type!r}; declared: {', '.join(sorted(self.routes))}")
        return validated_payload(self.classes, event_type, payload)


class Publisher:
    """Publishes payload instances of the generated classes.

    `publish(payload)` validates the event type and chain against the topology, builds the
    envelope (uuid4 `event_id`, UTC `timestamp`, `metadata.producer`/`version`), and queues it on
    `{event_type}.{chain_id}` keyed by the event's declared key field. Sending is asynchronous:
    pass `on_delivery` to learn each outcome, and call `flush()` to wait for all of them.
    Thread-safe.
    """

    def __init__(self, topology: Topology, classes: EventClasses, transport: PublisherTransport, producer: str,
                 metrics: RuntimeMetrics | None = None, tracing: Tracing | None = None) -> None:
        self.topology = topology
        self.tracing = tracing  # None: no span, headers sent as given (topo.runtime.tracing)
        self.classes = classes
        self.transport = transport
        self.producer = producer
        self.metrics = metrics
        self.envelopes = Envelopes(topology, classes, producer)
        self._lock = threading.RLock()  # a delivery callback may publish again
        self._cloudevents = CloudEventsWriter(topology, producer, transport.cloudevents_prefix,
                                              transport.cloudevents_content_type)
        self._published: dict[tuple[str, int], Any] = {}
        self._failed: dict[tuple[str, int], Any] = {}
        if metrics is not None:
            metrics.init_publisher()
            for event in topology.events:
                for topic in event.topics:
                    labels = (event.name, str(topic.chain_id))
                    self._published[(event.name, topic.chain_id)] = metrics.published.labels(*labels)
                    self._failed[(event.name, topic.chain_id)] = metrics.publish_failed.labels(*labels)

    def publish(self, payload: BaseModel | Mapping[str, Any], chain_id: int | None = None, *,
                event_type: str | None = None, event_id: UUID | None = None,
                on_delivery: Callable[[DeliveryReport], None] | None = None,
                headers: Mapping[str, str] | None = None) -> Published:
        """Publish one event. `payload` is an instance of a generated payload class, or a mapping
        together with `event_type`. `chain_id` defaults to the payload's; when given it must
        match. `headers` travel with the event (e.g. a W3C `traceparent` / `tracestate`), through
        retries, dead letters and replays. Raises PublishError (nothing sent) for an undeclared
        event type, a chain the event is not declared on, or an invalid payload."""
        published, body, headers = self.envelopes.build_with_headers(
            payload, chain_id, event_type=event_type, event_id=event_id, headers=headers, cloudevents=self._cloudevents)
        topic, key, kind = published.topic, published.key, published.event_type
        callback = self._callback(kind, published.chain_id, on_delivery)
        if self.tracing is None:
            with self._lock:
                self.transport.publish(topic, key, body, headers, callback)
        else:
            def send(traced: dict[str, str]) -> None:
                with self._lock:
                    self.transport.publish(topic, key, body, traced, callback)

            destination = topic.routing_key if self.tracing.broker == "rabbitmq" else topic.topic
            self.tracing.publish_headers(destination, kind, str(published.event_id), headers, send)
        return published

    def _callback(self, kind: str, chain: int, user: Callable[[DeliveryReport], None] | None
                  ) -> Callable[[DeliveryReport], None] | None:
        if self.metrics is None:
            return user
        published, failed = self._published[(kind, chain)], self._failed[(kind, chain)]

        def report(outcome: DeliveryReport) -> None:
            (published if outcome.error is None else failed).inc()
            if user is not None:
                user(outcome)

        return report

    def poll(self, timeout: float = 0.0) -> int:
        with self._lock:
            return self.transport.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every delivery report; returns how many are still outstanding."""
        with self._lock:
            return self.transport.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.transport.close(timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
