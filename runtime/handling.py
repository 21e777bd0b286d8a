"""What a consumer group's handler path works with and decides, apart from running it.

The path itself (decode → dedup → call → outcome) is one loop, `Worker._handle` in
`topo.runtime.worker`. This module gives it its vocabulary and its decisions: the routes
(handler, envelope decoder and metric children per subscribed topic), the `Work` made for a
delivery that does not simply succeed, the `Outcome` of such work, the `Done` batches of
successes, and `Handling`: the dedup store, the handler context, and the failure policy
(retry through the transport, retry in place, or dead-letter, with the failure headers).

Nothing here talks to the transport: the runner settles outcomes (`topo.runtime.settle`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel

from topo.core import headers as H
from topo.core.model import ConsumerGroup, RetryPolicy
from topo.runtime.cloudevents import CloudEventsReader, is_cloudevent
from topo.runtime.dedup import MemoryStore, ProcessedStore
from topo.runtime.events import EventClasses
from topo.runtime.handlers import BoundHandler, HandlerContext
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.outbox import DerivedEvents
from topo.runtime.tracing import Tracing
from topo.runtime.transport.base import Delivery, DerivedEvent, StreamId

log = logging.getLogger("topo.runtime")


class Outcome(Enum):
    """What the runner does with a delivery that did not simply succeed."""

    DUPLICATE = "duplicate"  # processed before: ack
    RETRY = "retry"  # failed, unordered: a copy goes to the transport's retry destination
    PARK = "park"  # failed, ordered: retried in place by its worker, its key waits
    DEAD = "dead"  # poison or out of retries: a copy goes to the dead-letter destination
    RELEASE = "release"  # stale or abandoned: given back for redelivery


@dataclass(slots=True)
class GroupRoute:
    """One subscribed (event type, chain): what to do with its deliveries."""

    event: str
    chain_id: int
    ordered: bool
    handler: BoundHandler
    envelope: type[BaseModel]
    labels: tuple[str, str, str]
    call: Callable[[Any, HandlerContext], Any]  # the handler given a context (it wants one, or is traced)
    fast: Callable[[Any], Any] | None = None  # the handler, when it takes the event alone (and is not traced)
    decode: Callable[[bytes], Any] = field(init=False)  # envelope.model_validate_json minus its wrapper
    consumed: Any = None
    failed: Any = None
    retried: Any = None
    duplicates: Any = None
    duration: Any = None
    latency: Any = None
    dead: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decode = self.envelope.__pydantic_validator__.validate_json


def build_routes(group: ConsumerGroup, classes: EventClasses, handlers: Mapping[str, BoundHandler],
                 metrics: RuntimeMetrics | None, tracing: Tracing | None = None) -> dict[str, GroupRoute]:
    """The group's routes by topic (Kafka) and routing key (RabbitMQ), with their metric children; with
    `tracing`, every handler runs inside its span (the context path)."""
    routes: dict[str, GroupRoute] = {}
    for subscription in group.subscriptions:
        handler = handlers[subscription.event]
        for chain_id, topic, routing_key in zip(subscription.chains, subscription.topics,
                                                subscription.routing_keys, strict=True):
            labels = (group.name, subscription.event, str(chain_id))
            route = GroupRoute(event=subscription.event, chain_id=chain_id, ordered=subscription.ordered,
                               handler=handler, envelope=classes.envelopes[subscription.event], labels=labels,
                               fast=None if handler.wants_context or tracing else handler.function,
                               call=tracing.wrap(handler, group.name) if tracing else handler.function)
            if metrics is not None:
                route.consumed = metrics.consumed.labels(*labels)
                route.failed = metrics.failed.labels(*labels)
                route.retried = metrics.retried.labels(*labels)
                route.duplicates = metrics.duplicates.labels(*labels)
                route.duration = metrics.handler_duration.labels(*labels)
                route.latency = metrics.latency.labels(*labels)
                route.dead = {reason: metrics.dead_lettered.labels(*labels, reason)
                              for reason in (H.REASON_MAX_RETRIES, H.REASON_POISON)}
            routes[topic] = route
            routes[routing_key] = route
    return routes


Lane = tuple[StreamId, str | None]  # (stream, key): events of one lane run one at a time, in order


@dataclass(slots=True)
class Work:
    """A delivery off the common path: its first attempt did not simply succeed, or it is a
    retry copy, stale, unsubscribed, or waiting behind its key's parked event."""

    delivery: Delivery
    route: GroupRoute | None
    lane: Lane
    generation: int  # of its stream when dispatched: stale once the stream's generation moves on
    failures: int  # failed attempts so far (from x-topo-attempt on retry copies)
    first_failure: str | None
    outcome: Outcome | None = None
    headers: dict[str, str] | None = None
    delay: float = 0.0  # seconds before the retry (RETRY, PARK)


# With metrics, per success: (route, handler seconds, now minus the envelope timestamp).
Sample = tuple[GroupRoute, float, float]


@dataclass(slots=True)
class Done:
    """Successes in stream order: settled as acks in one go."""

    deliveries: list[Delivery]
    samples: list[Sample] | None
    # The events handlers published, by index in `deliveries` (None: none did): sent with their
    # input's ack (`ConsumerTransport.publish_and_ack`).
    derived: dict[int, list[DerivedEvent]] | None = None


class Handling:
    """The group's routes, dedup store and failure policy; shared by every worker of a group."""

    def __init__(self, group: ConsumerGroup, routes: dict[str, GroupRoute], store: ProcessedStore,
                 time_scale: float, derived: DerivedEvents | None = None,
                 cloudevents: CloudEventsReader | None = None) -> None:
        self.group = group
        self.cloudevents = cloudevents
        self.routes = routes
        self.derived = derived  # None: the group publishes nothing from its handlers
        # Per topic, what the worker's loop calls for a first attempt (unpacked in one step).
        self.steps = {topic: (route, route.decode, route.fast) for topic, route in routes.items()}
        self.policy: RetryPolicy = group.retry
        self.time_scale = time_scale
        # The in-memory store shares no transaction: workers use it through its dictionary's
        # own methods, keyed on the UUID's integer (hashed in C; formatting costs more), and
        # skip the context manager of `processing`.
        self.memory = store if isinstance(store, MemoryStore) else None
        # Any other store group-commits (topo.runtime.group_commit).
        self.durable = None if self.memory is not None else store

    def body_of(self, delivery: Delivery) -> bytes:
        """The envelope JSON of a delivery off the common path: a CloudEvent (binary content mode)
        becomes the topo envelope (ValueError when it cannot: the event is poison)."""
        headers = delivery.headers
        if headers and is_cloudevent(headers):
            if self.cloudevents is None:
                raise ValueError("a CloudEvent, and this group reads none (no CloudEventsReader)")
            return self.cloudevents.envelope(delivery)
        return delivery.body

    def route_of(self, delivery: Delivery) -> GroupRoute | None:
        """The route of a delivery; a retry copy names its original topic in a header."""
        headers = delivery.headers
        return self.routes.get(headers.get(H.ORIGINAL_TOPIC, delivery.topic) if headers else delivery.topic)

    def work(self, delivery: Delivery, route: GroupRoute | None, generations: Mapping[StreamId, int]) -> Work:
        headers = delivery.headers
        stream = delivery.stream
        return Work(delivery=delivery, route=route, lane=(stream, delivery.key),
                    generation=generations.get(stream, 0),
                    failures=int(headers.get(H.ATTEMPT, 0)) if headers else 0,
                    first_failure=headers.get(H.FIRST_FAILURE) if headers else None)

    def poison(self, work: Work, error: BaseException | str) -> Work:
        """An undecodable envelope, or a topic the group does not subscribe: dead-letter it."""
        return outcome(work, Outcome.DEAD, self.failure_headers(work, error, H.REASON_POISON))

    def context(self, delivery: Delivery, route: GroupRoute, work: Work | None, transaction: Any,
                envelope: Any) -> HandlerContext:
        """What a two-argument handler receives besides the event (with a fresh outbox for the
        events it may publish)."""
        headers = delivery.headers
        failures = work.failures if work is not None else int(headers.get(H.ATTEMPT, 0))
        derived = self.derived
        traceparent, tracestate = headers.get(H.TRACEPARENT), headers.get(H.TRACESTATE)
        trace = {H.TRACEPARENT: traceparent, **({H.TRACESTATE: tracestate} if tracestate else {})} \
            if traceparent else None
        return HandlerContext(group=self.group.name, event_type=route.event, chain_id=route.chain_id,
                              topic=delivery.topic, partition=delivery.partition, offset=delivery.offset,
                              attempt=failures + 1, transaction=transaction,
                              traceparent=traceparent, tracestate=tracestate,
                              outbox=None if derived is None else derived.outbox(envelope.event_id, trace))

    def trim(self) -> None:
        """Bound the in-memory store's window (once per batch of successes, not per event)."""
        if self.memory is not None:
            self.memory.trim()

    def unsubscribed(self, work: Work) -> Work:
        delivery = work.delivery
        topic = delivery.headers.get(H.ORIGINAL_TOPIC, delivery.topic)
        return self.poison(work, f"topic or routing key {topic!r} is not subscribed by group {self.group.name}")

    def failed(self, work: Work, route: GroupRoute, envelope: Any, error: Exception, started: float) -> Work:
        """The handler raised (its attempt began at `started`, time.perf_counter): retry (in
        place for ordered events, else through the transport) or, past max retries, dead-letter."""
        if route.failed is not None:
            route.failed.inc()
            route.duration.observe(time.perf_counter() - started)
        work.failures += 1
        now = H.now_text()
        work.first_failure = work.first_failure or now
        policy = self.policy
        log.warning("%s: %s attempt %d of event %s failed: %s: %s", self.group.name, route.event, work.failures,
                    envelope.event_id, H.error_class(error), H.error_message(error))
        if work.failures > policy.max_retries:
            return outcome(work, Outcome.DEAD, self.failure_headers(work, error, H.REASON_MAX_RETRIES, now))
        delay = policy.delays_seconds[work.failures - 1]
        if route.retried is not None:
            route.retried.inc()
        headers = self.failure_headers(work, error, None, now)
        if route.ordered:  # in place: the key waits (its later events park behind it)
            return outcome(work, Outcome.PARK, headers, delay)
        headers[H.RETRY_DELAY] = f"{delay:g}"
        headers[H.RETRY_DUE_MS] = str(int((time.time() + delay * self.time_scale) * 1000))
        return outcome(work, Outcome.RETRY, headers, delay)

    def failure_headers(self, work: Work, error: BaseException | str, reason: str | None,
                        now: str | None = None) -> dict[str, str]:
        delivery = work.delivery
        stamp = now or H.now_text()
        original = delivery.headers
        result = {
            H.ORIGINAL_TOPIC: original.get(H.ORIGINAL_TOPIC, delivery.topic),
            H.ORIGINAL_PARTITION: original.get(H.ORIGINAL_PARTITION, str(delivery.partition)),
            H.ORIGINAL_OFFSET: original.get(H.ORIGINAL_OFFSET, str(delivery.offset)),
            H.GROUP: self.group.name,
            H.ATTEMPT: str(work.failures),
            H.ERROR_CLASS: error if isinstance(error, str) else H.error_class(error),
            H.ERROR_MESSAGE: error if isinstance(error, str) else H.error_message(error),
            H.FIRST_FAILURE: work.first_failure or stamp,
            H.LAST_FAILURE: stamp,
        }
        if isinstance(error, str):
            result[H.ERROR_CLASS] = "topo.runtime.UnknownTopic"
        if reason is not None:
            result[H.DEAD_LETTER_REASON] = reason
        return result


def outcome(work: Work, result: Outcome, headers: dict[str, str] | None = None, delay: float = 0.0) -> Work:
    work.outcome = result
    if headers is not None:
        work.headers = headers
    work.delay = delay
    return work

