"""The consume loop of one consumer group: broker-neutral, on top of a `ConsumerTransport`.

Threads: one loop thread (the caller of `run`) talks to the transport: it polls, dispatches
deliveries to workers, and settles their outcomes. `concurrency` worker threads run handlers.
A delivery goes to the worker chosen by its key, so events with one key run one at a time and in
stream order. A worker that must retry an ordered event in place parks that key (its later events
wait behind it, in order) and keeps serving the other keys; the retry fires from the worker's own
timer. Unordered events are retried through the transport's retry destinations instead.

Settling (ack / retry_later / dead_letter / release) happens only on the loop thread, after the
handler's outcome is known: at-least-once. In-flight work is bounded by `group.max_in_flight`:
at that mark every stream is paused, and resumed once half of it has drained (hysteresis).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

from topo.core import headers as H
from topo.core.model import ConsumerGroup, Topology
from topo.core.model import Delivery as DeliveryMode
from topo.runtime.dedup import MemoryStore, ProcessedStore
from topo.runtime.events import EventClasses
from topo.runtime.handlers import BoundHandler, HandlerContext
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.transport.base import (
    POLL_INTERVAL_MAX,
    ConsumeOptions,
    ConsumerTransport,
    Delivery,
    StreamId,
    Transport,
)

log = logging.getLogger("topo.runtime")

BUSY_POLL = 0.005  # poll timeout while handlers run: settles their outcomes promptly
# Near max_in_flight the loop stops fetching; only if in-flight work stays above the low-water
# mark this long are the streams paused, because pausing discards the client's prefetch (Kafka)
# and a brief saturation is normal.
PAUSE_AFTER = 1.0
MAX_BATCH = 500  # deliveries taken per poll
# A worker hands its successes to the loop thread at the end of a batch, or once this long has
# passed since it last did (so slow handlers settle, and free room, as they go).
SETTLE_AFTER = BUSY_POLL


STREAM_OF = operator.attrgetter("source", "partition")  # Delivery.stream, computed in C


class Outcome(Enum):
    DONE = "done"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD = "dead"
    RELEASE = "release"


@dataclass(slots=True)
class GroupRoute:
    """One subscribed (event type, chain): what to do with its deliveries."""

    event: str
    chain_id: int
    ordered: bool
    handler: BoundHandler
    envelope: type[BaseModel]
    labels: tuple[str, str, str]
    fast: Callable[[Any], Any] | None = None  # the handler, when it takes the event alone
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


@dataclass(slots=True)
class Work:
    delivery: Delivery
    route: GroupRoute | None
    lane: tuple[StreamId, str | None]
    generation: int
    failures: int  # failed attempts so far (from x-topo-attempt on retry copies)
    first_failure: str | None
    envelope: BaseModel | None = None
    outcome: Outcome | None = None
    headers: dict[str, str] | None = None
    delay: float = 0.0
    duration: float = 0.0  # handler seconds of the successful attempt (for metrics)
    latency: float = 0.0  # now minus the envelope timestamp at success (for metrics)


@dataclass(slots=True)
class Done:
    """First attempts that succeeded, in stream order: settled as acks in one go."""

    deliveries: list[Delivery]
    # With metrics: (route, handler seconds, now minus the envelope timestamp) per delivery.
    samples: list[tuple[GroupRoute, float, float]] | None


# Deliveries of one poll for one worker, with the `generations` map current when they were
# dispatched (the runner replaces that map rather than changing it, so it is a snapshot).
Batch = tuple[list[Delivery], Mapping[StreamId, int]]


class Worker(threading.Thread):
    """Runs handlers for the keys hashed to it, in order; parks keys that retry in place."""

    def __init__(self, runner: GroupRunner, index: int) -> None:
        super().__init__(name=f"topo-{runner.group.name}-worker-{index}", daemon=True)
        self.runner = runner
        self.inbox: deque[Batch] = deque()
        self.wakeup = threading.Condition()
        self.blocked: dict[tuple[StreamId, str | None], deque[Work]] = {}
        self.timers: list[tuple[float, int, tuple[StreamId, str | None]]] = []
        self.sweep = False  # set by the loop thread: release stale or (draining) parked work
        self.stopping = False
        self.busy = False

    def submit(self, batch: Batch) -> None:
        with self.wakeup:
            self.inbox.append(batch)
            self.wakeup.notify()

    def poke(self) -> None:
        with self.wakeup:
            self.sweep = True
            self.wakeup.notify()

    def stop(self) -> None:
        with self.wakeup:
            self.stopping = True
            self.wakeup.notify()

    def run(self) -> None:
        while True:
            with self.wakeup:
                while not (self.inbox or self.sweep or self.stopping or self._due()):
                    self.wakeup.wait(self._wait_time())
                if self.stopping:
                    break
                batches = list(self.inbox)
                self.inbox.clear()
                sweep, self.sweep = self.sweep, False
            try:
                self.process(batches, sweep)
            except BaseException as error:  # a bug, or SystemExit from a handler: stop, never hang
                log.critical("%s: worker %s crashed: %r; stopping the group", self.runner.group.name, self.name,
                             error, exc_info=error)
                self.runner.failure = error
                self.runner.stop()
                return

    def process(self, batches: Iterable[Batch] = (), sweep: bool = False) -> None:
        """Handle `batches` in order, fire due in-place retries, and (sweep) release parked work
        that is stale or, while draining, any. Runs on this worker's thread, or on the loop
        thread for an inline runner (concurrency 0)."""
        runner = self.runner
        self.busy = True
        for deliveries, generations in batches:
            self._handle(deliveries, generations)
        if self.timers:
            self._fire_due()
        if sweep:
            self._sweep()
        self.busy = False
        if runner.completions and not runner.completed.is_set():
            runner.completed.set()

    def _handle(self, deliveries: list[Delivery], generations: Mapping[StreamId, int]) -> None:
        """The common case inline: a first attempt of a subscribed event whose key is not parked,
        the in-memory dedup store and a one-argument handler. Its successes are settled together
        as a `Done`; anything else (poison, duplicate, failure, retry copy, stale, parked key,
        context or store transaction wanted) becomes a `Work` for `_admit` and `attempt`."""
        runner = self.runner
        fast_routes = runner.fast_routes
        plain = runner.plain_store
        blocked = self.blocked
        current = generations is runner.generations
        samples: list[tuple[GroupRoute, float, float]] | None = [] if runner.metrics is not None else None
        done: list[Delivery] = []
        clock = time.perf_counter
        flushed = started = clock()
        if plain is None:  # a store with transactions: every delivery takes attempt()
            for delivery in deliveries:
                self._admit(delivery, generations)
            return
        seen, add = plain.seen, plain.add
        attempt_header, original_header, settle_after = H.ATTEMPT, H.ORIGINAL_TOPIC, SETTLE_AFTER
        for delivery in deliveries:
            headers = delivery.headers
            fast = fast_routes.get(delivery.topic)
            if (fast is None
                    or (headers and (attempt_header in headers or original_header in headers))
                    or (not current and generations.get(delivery.stream) != runner.generations.get(delivery.stream))
                    or (blocked and (delivery.stream, delivery.key) in blocked)):
                self._flush(done, samples)
                self._admit(delivery, generations)
                continue
            decode, handler, route = fast
            try:
                envelope = decode(delivery.body)
            except (ValidationError, ValueError):
                self._flush(done, samples)
                self._admit(delivery, generations)  # dead-letters it as poison, with the reason
                continue
            event_id = envelope.event_id.int
            if seen(event_id):
                self._flush(done, samples)
                self._admit(delivery, generations, envelope)
                continue
            if samples is not None:
                started = clock()
            try:
                handler(envelope)
            except Exception as error:
                self._flush(done, samples)
                work = self._work(delivery, generations)
                work.envelope = envelope
                self._failed(work, error, started)
                continue
            add(event_id, None)
            done.append(delivery)
            finished = clock()
            if samples is not None:
                samples.append((route, finished - started, time.time() - envelope.timestamp.timestamp()))
            if finished - flushed >= settle_after:  # slow handlers: settle as they finish, not per batch
                self._flush(done, samples)
                runner.completed.set()
                flushed = finished
        self._flush(done, samples)

    def _flush(self, done: list[Delivery], samples: list[tuple[GroupRoute, float, float]] | None) -> None:
        """Hand the successes so far to the loop thread (before any other outcome: stream order)."""
        if done:
            plain = self.runner.plain_store
            if plain is not None:
                plain.trim()
            self.runner.completions.append(Done(done[:], samples[:] if samples is not None else None))
            done.clear()
            if samples is not None:
                samples.clear()

    def _work(self, delivery: Delivery, generations: Mapping[StreamId, int]) -> Work:
        headers = delivery.headers
        stream = delivery.stream
        return Work(delivery=delivery, route=self.runner.route_of(delivery), lane=(stream, delivery.key),
                    generation=generations.get(stream, 0),
                    failures=int(headers.get(H.ATTEMPT, 0)) if headers else 0,
                    first_failure=headers.get(H.FIRST_FAILURE) if headers else None)

    def _admit(self, delivery: Delivery, generations: Mapping[StreamId, int], envelope: BaseModel | None = None
               ) -> None:
        """The general path for one delivery: stale, unsubscribed, parked behind its key, or attempted."""
        runner = self.runner
        work = self._work(delivery, generations)
        work.envelope = envelope
        if work.generation != runner.generations.get(work.lane[0]):
            runner.complete(work, Outcome.RELEASE)
        elif work.route is None:
            topic = delivery.headers.get(H.ORIGINAL_TOPIC, delivery.topic)
            reason = f"topic or routing key {topic!r} is not subscribed by group {runner.group.name}"
            runner.complete(work, Outcome.DEAD, runner.failure_headers(work, reason, H.REASON_POISON))
        elif work.lane in self.blocked:
            self.blocked[work.lane].append(work)  # behind its key's retrying event
        else:
            self.attempt(work)

    def _due(self) -> bool:
        return bool(self.timers) and self.timers[0][0] <= time.monotonic()

    def _wait_time(self) -> float | None:
        return max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None

    def _fire_due(self) -> None:
        runner = self.runner
        while self.timers and self.timers[0][0] <= time.monotonic():
            _, _, lane = heapq.heappop(self.timers)
            waiting = self.blocked.get(lane)
            while waiting:
                work = waiting[0]
                if work.generation != runner.generations.get(work.delivery.stream):
                    waiting.popleft()
                    runner.complete(work, Outcome.RELEASE)
                    continue
                if not self.attempt(work, retrying=True):
                    break  # failed again: a new timer is set; the key stays parked
                waiting.popleft()
            if lane in self.blocked and not self.blocked[lane]:
                del self.blocked[lane]

    def _sweep(self) -> None:
        runner = self.runner
        for lane in list(self.blocked):
            waiting = self.blocked[lane]
            stale = runner.draining or any(w.generation != runner.generations.get(w.delivery.stream)
                                           for w in waiting)
            if stale:
                for work in waiting:
                    runner.complete(work, Outcome.RELEASE)
                del self.blocked[lane]
        live = set(self.blocked)
        self.timers = [t for t in self.timers if t[2] in live]
        heapq.heapify(self.timers)

    def attempt(self, work: Work, retrying: bool = False) -> bool:
        """Run the handler once; True when the work is finished (whatever its outcome), False
        when it is parked for an in-place retry."""
        runner = self.runner
        route = work.route
        assert route is not None
        delivery = work.delivery
        envelope = work.envelope
        if envelope is None:
            try:
                envelope = work.envelope = route.envelope.model_validate_json(delivery.body)
            except (ValidationError, ValueError) as error:
                runner.complete(work, Outcome.DEAD, runner.failure_headers(work, error, H.REASON_POISON))
                return True
        plain = runner.plain_store
        # The in-memory store keys on the UUID's integer (hashed in C; formatting costs more).
        event_id = envelope.event_id.int if plain is not None else str(envelope.event_id)  # type: ignore[attr-defined]
        if (plain if plain is not None else runner.store).is_processed(event_id):
            runner.complete(work, Outcome.DUPLICATE)
            return True
        handler = route.handler
        started = time.perf_counter()
        try:
            if plain is not None:  # in-memory dedup: no transaction to share
                if handler.wants_context:
                    handler.function(envelope, self._context(work, None))
                else:
                    handler.function(envelope)
                plain.mark(event_id)
            else:
                with runner.store.processing(event_id) as transaction:
                    if handler.wants_context:
                        handler.function(envelope, self._context(work, transaction))
                    else:
                        handler.function(envelope)
        except Exception as error:
            return self._failed(work, error, started)
        if route.consumed is not None:
            # Recorded by the loop thread when it settles: metric locks shared by worker threads
            # would make them take turns on the GIL per event.
            work.duration = time.perf_counter() - started
            work.latency = time.time() - envelope.timestamp.timestamp()  # type: ignore[attr-defined]
        runner.complete(work, Outcome.DONE)
        return True

    def _context(self, work: Work, transaction: Any) -> HandlerContext:
        route = work.route
        assert route is not None
        delivery = work.delivery
        return HandlerContext(group=self.runner.group.name, event_type=route.event, chain_id=route.chain_id,
                              topic=delivery.topic, partition=delivery.partition, offset=delivery.offset,
                              attempt=work.failures + 1, transaction=transaction)

    def _failed(self, work: Work, error: Exception, started: float) -> bool:
        """The handler raised: retry (in place for ordered events, else through the transport)
        or, past max retries, dead-letter. False when the work is parked for an in-place retry."""
        runner = self.runner
        route = work.route
        assert route is not None
        if route.failed is not None:
            route.failed.inc()
            route.duration.observe(time.perf_counter() - started)
        work.failures += 1
        now = H.now_text()
        work.first_failure = work.first_failure or now
        policy = runner.group.retry
        log.warning("%s: %s attempt %d of event %s failed: %s: %s", runner.group.name, route.event, work.failures,
                    getattr(work.envelope, "event_id", "?"), H.error_class(error), H.error_message(error))
        if work.failures > policy.max_retries:
            runner.complete(work, Outcome.DEAD, runner.failure_headers(work, error, H.REASON_MAX_RETRIES, now))
            return True
        delay = policy.delays_seconds[work.failures - 1]
        if route.retried is not None:
            route.retried.inc()
        if not route.ordered:
            headers = runner.failure_headers(work, error, None, now)
            headers[H.RETRY_DELAY] = f"{delay:g}"
            headers[H.RETRY_DUE_MS] = str(int((time.time() + delay * runner.time_scale) * 1000))
            runner.complete(work, Outcome.RETRY, headers, delay)
            return True
        # In place: the key waits (its later events park behind it); other keys keep flowing.
        waiting = self.blocked.setdefault(work.lane, deque())
        if not waiting or waiting[0] is not work:
            waiting.appendleft(work)
        work.headers = runner.failure_headers(work, error, None, now)
        heapq.heappush(self.timers, (time.monotonic() + delay * runner.time_scale, next(runner.sequence), work.lane))
        return False


class GroupRunner:
    """Runs one consumer group on a transport until stopped (see the module docstring)."""

    def __init__(self, topology: Topology, group: ConsumerGroup, classes: EventClasses, transport: Transport,
                 handlers: Mapping[str, BoundHandler], store: ProcessedStore | None = None,
                 metrics: RuntimeMetrics | None = None, concurrency: int = 8, shutdown_timeout: float = 30.0,
                 time_scale: float = 1.0, client_id: str = "", state: Any = None) -> None:
        self.topology = topology
        # Optional health state (topo.runtime.observe.health.RuntimeState): told about connection
        # and assignment, so /readyz and /healthz answer for this runner.
        self.state = state
        self.group = group
        self.classes = classes
        self.transport = transport
        self.store = store if store is not None else MemoryStore(group.dedup.capacity)
        # The in-memory store shares no transaction: the hot path skips its context manager.
        self.plain_store = self.store if type(self.store) is MemoryStore else None
        self.metrics = metrics
        # 0: handlers run on the loop thread (no hand-off; for fast CPU-bound handlers on Kafka,
        # where the client heartbeats in the background); N: N worker threads.
        self.concurrency = max(0, concurrency)
        self._inline: Worker | None = None
        self.shutdown_timeout = shutdown_timeout
        self.time_scale = time_scale
        self.client_id = client_id
        self.sequence = itertools.count()
        self.generations: dict[StreamId, int] = {}
        self.draining = False
        self.completions: deque[Work | Done] = deque()
        self.completed = threading.Event()
        self.in_flight = 0
        self.in_flight_by_stream: dict[StreamId, int] = {}
        self.paused: set[StreamId] = set()
        self.high_water = max(1, group.max_in_flight)
        self.low_water = self.high_water // 2
        self.refill = max(1, min(MAX_BATCH, self.high_water // 4))  # least room worth a fetch
        self._stop = threading.Event()
        self._consumer: ConsumerTransport | None = None
        self._workers: list[Worker] = []
        self.routes = self._routes(handlers)
        # Routes whose handler takes the event alone, with what the inline path calls per event.
        self.fast_routes = {topic: (route.decode, route.fast, route) for topic, route in self.routes.items()
                            if route.fast is not None}
        self._saturated_since: float | None = None
        self.failure: BaseException | None = None  # a worker crashed: run() raises it after draining
        self.handled = 0  # settled deliveries (any outcome), for tests and `run_until`
        if metrics is not None:
            metrics.init_group(group)
            self._in_flight_gauge = metrics.in_flight.labels(group.name)
            self._paused_gauge = metrics.paused_partitions.labels(group.name)
            self._progress_gauge = metrics.last_progress.labels(group.name)

    def _routes(self, handlers: Mapping[str, BoundHandler]) -> dict[str, GroupRoute]:
        routes: dict[str, GroupRoute] = {}
        metrics = self.metrics
        for subscription in self.group.subscriptions:
            handler = handlers[subscription.event]
            for chain_id, topic, routing_key in zip(subscription.chains, subscription.topics,
                                                    subscription.routing_keys, strict=True):
                labels = (self.group.name, subscription.event, str(chain_id))
                route = GroupRoute(event=subscription.event, chain_id=chain_id, ordered=subscription.ordered,
                                   handler=handler, envelope=self.classes.envelopes[subscription.event],
                                   labels=labels, fast=None if handler.wants_context else handler.function)
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

    def route_of(self, delivery: Delivery) -> GroupRoute | None:
        """The route of a delivery; a retry copy names its original topic in a header."""
        headers = delivery.headers
        return self.routes.get(headers.get(H.ORIGINAL_TOPIC, delivery.topic) if headers else delivery.topic)

    def _next_generation(self, streams: Iterable[StreamId]) -> None:
        """Work dispatched for `streams` before now becomes stale. The map is replaced, never
        changed in place: a batch keeps the map of its dispatch as its snapshot."""
        generations = dict(self.generations)
        for stream in streams:
            generations[stream] = generations.get(stream, 0) + 1
        self.generations = generations

    # ------------------------------------------------------------------ called by workers

    def complete(self, work: Work, outcome: Outcome, headers: dict[str, str] | None = None,
                 delay: float = 0.0) -> None:
        work.outcome = outcome
        if headers is not None:
            work.headers = headers
        work.delay = delay
        self.completions.append(work)  # the worker signals `completed` once per batch

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

    # ------------------------------------------------------------------ AssignmentListener

    def on_assigned(self, streams: Sequence[StreamId]) -> None:
        fresh = [stream for stream in streams if stream not in self.generations]
        if fresh:
            # Revocation already moved the generation of a known stream on; work dispatched
            # since stays valid.
            self.generations = {**self.generations, **dict.fromkeys(fresh, 0)}
        for stream in streams:
            self.in_flight_by_stream.setdefault(stream, 0)
        if self.paused and self._consumer is not None:
            self._consumer.pause(streams)  # newly assigned streams respect the current backpressure
            self.paused.update(streams)
        if self.state is not None and self._consumer is not None:
            self.state.set_assignment(self.group.name, len(self._consumer.assignment()))
        log.info("%s: assigned %s", self.group.name, ", ".join(f"{s}[{p}]" for s, p in streams))

    def on_revoked(self, streams: Sequence[StreamId]) -> None:
        self._give_up(streams, commit=True)
        log.info("%s: revoked %s", self.group.name, ", ".join(f"{s}[{p}]" for s, p in streams))

    def on_lost(self, streams: Sequence[StreamId]) -> None:
        self._give_up(streams, commit=False)

    def _give_up(self, streams: Sequence[StreamId], commit: bool) -> None:
        """Revocation (commit=True): finish the work already dispatched for `streams`, in order,
        up to the shutdown deadline, and release only what is left then: work given back would
        come back behind newer messages on RabbitMQ (a requeued message loses its place). Lost
        streams (commit=False) already belong to another consumer: release at once."""
        pending = set(streams)

        def busy() -> bool:
            return any(self.in_flight_by_stream.get(s, 0) for s in pending)

        if commit:
            self._wait(busy, time.monotonic() + self.shutdown_timeout)
        self._next_generation(streams)
        self._poke_all()
        self._wait(busy, time.monotonic() + max(1.0, BUSY_POLL * 10))
        if commit and self._consumer is not None:
            self._consumer.commit()
        for stream in streams:
            self.in_flight_by_stream.pop(stream, None)
            self.paused.discard(stream)
        if self.state is not None and self._consumer is not None:
            self.state.set_assignment(self.group.name, max(0, len(self._consumer.assignment()) - len(streams)))

    def _wait(self, busy: Callable[[], bool], deadline: float) -> None:
        """Settle outcomes (and fire inline retries) until `busy()` is false or the deadline."""
        inline = self._inline
        while True:
            self._settle()
            if not busy() or time.monotonic() >= deadline:
                return
            if inline is not None and inline.timers and inline.timers[0][0] <= time.monotonic():
                inline.process()
            self.completed.wait(BUSY_POLL)
            self.completed.clear()

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        """Ask the loop to drain and return (safe from signal handlers and other threads)."""
        self._stop.set()
        self.completed.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Consume until `stop()` (or `until()` is true, or `timeout` seconds), then drain:
        stop fetching, finish the work already fetched within `shutdown_timeout`, settle,
        commit, and leave the group."""
        options = ConsumeOptions(max_in_flight=self.high_water,
                                 exactly_once=self.group.delivery is DeliveryMode.EXACTLY_ONCE
                                 and self.transport.supports_exactly_once,
                                 client_id=self.client_id)
        if self.group.delivery is DeliveryMode.EXACTLY_ONCE and not options.exactly_once:
            log.warning("%s: delivery exactly_once needs Kafka transactions; on %s the group runs at-least-once "
                        "with dedup (side effects written through context.transaction stay exactly-once)",
                        self.group.name, self.transport.kind)
        consumer = self._consumer = self.transport.open_consumer(self.group, options)
        self._workers = [Worker(self, index) for index in range(self.concurrency)]
        self._inline = None if self._workers else Worker(self, 0)
        for worker in self._workers:
            worker.start()
        ends = None if timeout is None else time.monotonic() + timeout
        try:
            consumer.subscribe(self)
            if self.state is not None:
                self.state.set_connected(True)
            while not self._stop.is_set():
                if until is not None and until():
                    break
                if ends is not None and time.monotonic() > ends:
                    break
                self._iterate(consumer)
            self._drain(consumer)
            if self.failure is not None:
                raise RuntimeError(f"consumer group {self.group.name}: a worker crashed") from self.failure
        except Exception as error:
            if self.state is not None:
                self.state.fail(f"{type(error).__name__}: {error}")
            raise
        finally:
            if self.state is not None:
                self.state.clear_assignment(self.group.name)
                self.state.set_connected(False)
            for worker in self._workers:
                worker.stop()
            try:
                consumer.close()
            finally:
                self._consumer = None

    def _poke_all(self) -> None:
        if self._inline is not None:
            self._inline.process(sweep=True)
        for worker in self._workers:
            worker.poke()

    def _iterate(self, consumer: ConsumerTransport) -> None:
        inline = self._inline
        if inline is not None and inline.timers and inline.timers[0][0] <= time.monotonic():
            inline.process()
        progressed = self._settle()
        room = self.high_water - self.in_flight
        if self.in_flight <= self.low_water:
            self._saturated_since = None
        elif self._saturated_since is None:
            self._saturated_since = time.monotonic()
        if room < self.refill and self.in_flight:
            # (Nearly) full: wait for a worthwhile amount of room rather than fetching crumbs,
            # which would make the loop and the workers take turns per event. When in-flight
            # work has stayed above the low-water mark for PAUSE_AFTER, pause every stream (the
            # client then serves its connection without fetching) until it falls to low water.
            if (not self.paused and self._saturated_since is not None
                    and time.monotonic() - self._saturated_since >= PAUSE_AFTER):
                self._pause_all(consumer)
            self.completed.wait(BUSY_POLL)
            self.completed.clear()
            deliveries = consumer.poll(0, 0.0)  # serve the connection; nothing new is fetched
        else:
            if self.paused and self.in_flight <= self.low_water:
                self._resume_all(consumer)
            timeout = 0.0 if self.completions else (BUSY_POLL if self.in_flight else POLL_INTERVAL_MAX)
            if inline is not None and inline.timers:
                timeout = min(timeout, max(0.0, inline.timers[0][0] - time.monotonic()))
            self.completed.clear()
            deliveries = consumer.poll(min(room, MAX_BATCH), timeout)
        if deliveries:
            self._dispatch(deliveries)
            progressed = True
        if self.metrics is not None:
            self._in_flight_gauge.set(self.in_flight)
            if progressed:
                self._progress_gauge.set(time.time())

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        """Count `deliveries` in flight and hand them to the workers of their keys, in order."""
        self.in_flight += len(deliveries)
        by_stream = self.in_flight_by_stream
        for stream, run in itertools.groupby(deliveries, STREAM_OF):  # runs per partition: no loop per event
            by_stream[stream] = by_stream.get(stream, 0) + len(list(run))
        generations = self.generations
        if self._inline is not None:
            self._inline.process(((deliveries, generations),))
            return
        workers = self._workers
        count = len(workers)
        if count == 1:
            workers[0].submit((deliveries, generations))
            return
        batches: list[list[Delivery]] = [[] for _ in range(count)]
        for delivery in deliveries:
            key = delivery.key
            batches[hash(key) % count if key is not None else delivery.offset % count].append(delivery)
        for worker, batch in zip(workers, batches, strict=True):
            if batch:
                worker.submit((batch, generations))

    def _settle(self) -> bool:
        """Settle every finished piece of work on the transport, in completion order; True if any was."""
        completions = self.completions
        if not completions:
            return False
        consumer = self._consumer
        assert consumer is not None
        acks: list[Delivery] = []
        released: list[Delivery] = []
        by_stream = self.in_flight_by_stream
        settled = 0
        while completions:
            item = completions.popleft()
            if type(item) is Done:
                deliveries = item.deliveries
                acks += deliveries
                settled += len(deliveries)
                for stream, run in itertools.groupby(deliveries, STREAM_OF):
                    if stream in by_stream:
                        by_stream[stream] -= len(list(run))
                if item.samples is not None:
                    for route, duration, latency in item.samples:
                        route.consumed.inc()
                        route.duration.observe(duration)
                        route.latency.observe(latency)
                continue
            assert isinstance(item, Work)
            self._settle_work(consumer, item, acks, released)
            settled += 1
            delivery = item.delivery
            stream = (delivery.source, delivery.partition)
            if stream in by_stream:
                by_stream[stream] -= 1
        if acks:
            consumer.ack(acks)
        if released:
            consumer.release(released)
        self.in_flight -= settled
        self.handled += settled
        return True

    def _settle_work(self, consumer: ConsumerTransport, work: Work, acks: list[Delivery],
                     released: list[Delivery]) -> None:
        delivery = work.delivery
        outcome = work.outcome
        route = work.route
        if outcome is Outcome.DONE:
            acks.append(delivery)
            if route is not None and route.consumed is not None:
                route.consumed.inc()
                route.duration.observe(work.duration)
                route.latency.observe(work.latency)
        elif outcome is Outcome.DUPLICATE:
            acks.append(delivery)
            if route is not None and route.duplicates is not None:
                route.duplicates.inc()
        elif outcome is Outcome.RELEASE:
            released.append(delivery)
        else:
            if acks:  # keep settling order per stream
                consumer.ack(acks)
                acks.clear()
            assert work.headers is not None
            if outcome is Outcome.RETRY:
                consumer.retry_later(delivery, work.delay, work.headers)
            else:
                consumer.dead_letter(delivery, work.headers)
                reason = work.headers.get(H.DEAD_LETTER_REASON, H.REASON_POISON)
                if route is not None and route.dead:
                    route.dead[reason].inc()
                log.error("%s: dead-lettered %s[%d]@%d (%s): %s", self.group.name, delivery.source,
                          delivery.partition, delivery.offset, reason, work.headers.get(H.ERROR_MESSAGE))

    def _pause_all(self, consumer: ConsumerTransport) -> None:
        streams = [s for s in consumer.assignment() if s not in self.paused]
        if streams:
            consumer.pause(streams)
            self.paused.update(streams)
            if self.metrics is not None:
                self._paused_gauge.set(len(self.paused))

    def _resume_all(self, consumer: ConsumerTransport) -> None:
        consumer.resume(list(self.paused))
        self.paused.clear()
        if self.metrics is not None:
            self._paused_gauge.set(0)

    def _drain(self, consumer: ConsumerTransport) -> None:
        """Shutdown: no more fetching; finish the work already fetched (in-place retries
        included) within the deadline; release what is left; commit."""
        if consumer.assignment():
            self._pause_all(consumer)
        deadline = time.monotonic() + self.shutdown_timeout

        def busy() -> bool:
            fetched = consumer.poll(0, 0.0)  # serve the connection; anything still handed out is handled too
            if fetched:
                self._dispatch(fetched)
            return self.in_flight > 0

        self._wait(busy, deadline)
        if self.in_flight > 0:
            log.warning("%s: %d events unfinished after the %.0fs shutdown deadline; they will be redelivered",
                        self.group.name, self.in_flight, self.shutdown_timeout)
            self.draining = True
            self._next_generation(list(self.generations))
            self._poke_all()
            self._wait(lambda: self.in_flight > 0, time.monotonic() + max(1.0, BUSY_POLL * 10))
        consumer.commit()

    @property
    def paused_streams(self) -> frozenset[StreamId]:
        return frozenset(self.paused)
