"""The consume loop of one consumer group: broker-neutral, on top of a `ConsumerTransport`.

Threads: one loop thread (the caller of `run`) talks to the transport: it polls, dispatches
deliveries to workers (`topo.runtime.worker`), and settles their outcomes (`topo.runtime.settle`).
By default (concurrency None) handlers run inline on the loop thread while they are quick and on
worker threads while they block (`topo.runtime.pacing`); `concurrency` N fixes N worker threads,
0 fixes inline. Inline work runs in slices, so the loop serves its connection between them, and
a watchdog keeps a connection that needs it (RabbitMQ's heartbeats) alive while one long handler
call holds the loop thread. A delivery goes to the worker chosen by its key, so events with one
key run one at a time and in stream order. Ordered events retry in place on their worker; unordered events are retried
through the transport's retry destinations.

Settling (ack / retry_later / dead_letter / release) happens only on the loop thread, after the
handler's outcome is known: at-least-once. In-flight work is bounded by `group.max_in_flight`:
at that mark every stream is paused, and resumed once half of it has drained (hysteresis). The
loop polls at least every POLL_INTERVAL_MAX, so the transport keeps its connection alive.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from topo.core.model import ConsumerGroup, Topology
from topo.core.model import Delivery as DeliveryMode
from topo.runtime.cloudevents import CloudEventsReader
from topo.runtime.connection_state import BrokerLink
from topo.runtime.dedup import MemoryStore, ProcessedStore
from topo.runtime.events import EventClasses
from topo.runtime.handlers import BoundHandler
from topo.runtime.handling import Handling, build_routes
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.outbox import DerivedEvents
from topo.runtime.pacing import DEFAULT_THREADS, SLICE, Keepalive, Pacing, SliceMeter
from topo.runtime.settle import STREAM_OF, Settler
from topo.runtime.tracing import Tracing
from topo.runtime.transport.base import (
    POLL_INTERVAL_MAX,
    BrokerUnreachable,
    ConsumeOptions,
    ConsumerTransport,
    Delivery,
    StreamId,
    Transport,
)
from topo.runtime.worker import Batch, Handoff, Worker, WorkerThread

log = logging.getLogger("topo.runtime")

BUSY_POLL = 0.005  # poll timeout while handlers run: settles their outcomes promptly
# Near max_in_flight the loop stops fetching; only if in-flight work stays above the low-water
# mark this long are the streams paused, because pausing discards the client's prefetch (Kafka)
# and a brief saturation is normal.
PAUSE_AFTER = 1.0
MAX_BATCH = 500  # deliveries taken per poll


class UntilTimeout(TimeoutError):
    """`GroupRunner.run(until=..., timeout=...)` reached its timeout with `until()` still false:
    a test waiting for its handlers fails here, naming the condition and what was handled."""


def describe_condition(until: Callable[[], bool]) -> str:
    """`until` as its source line and place (a lambda has no useful name), else its name."""
    code = getattr(until, "__code__", None)
    name = getattr(until, "__qualname__", repr(until))
    if code is None:
        return name
    try:
        source = " ".join(inspect.getsource(until).split())
    except (OSError, TypeError):
        source = name
    return f"`{source}` ({code.co_filename}:{code.co_firstlineno})"


class GroupRunner:
    """Runs one consumer group on a transport until stopped (see the module docstring)."""

    def __init__(self, topology: Topology, group: ConsumerGroup, classes: EventClasses, transport: Transport,
                 handlers: Mapping[str, BoundHandler], store: ProcessedStore | None = None,
                 metrics: RuntimeMetrics | None = None, concurrency: int | None = None,
                 shutdown_timeout: float = 30.0, time_scale: float = 1.0, client_id: str = "", state: Any = None,
                 tracing: Tracing | None = None) -> None:
        self.topology = topology
        # Optional health state (topo.runtime.observe.health.RuntimeState): told about connection
        # and assignment, so /readyz and /healthz answer for this runner.
        self.state = state
        self.group = group
        self.classes = classes
        self.transport = transport
        self.store = store if store is not None else MemoryStore(group.dedup.capacity)
        self.metrics = metrics
        # None: adaptive (inline while handlers are quick, up to DEFAULT_THREADS worker threads
        # while they block); 0: always inline; N: always N worker threads.
        self.concurrency = DEFAULT_THREADS if concurrency is None else max(0, concurrency)
        self.pacing = Pacing(adaptive=concurrency is None and self.concurrency > 0,
                             threaded=concurrency is not None and self.concurrency > 0)
        self._meter = SliceMeter()
        self._backlog: deque[Batch] = deque()  # inline work fetched, not yet handled (in order)
        self.keepalive: Keepalive | None = None  # while inline handling is possible
        self.shutdown_timeout = shutdown_timeout
        self.time_scale = time_scale
        self.client_id = client_id
        self.handling = Handling(group, build_routes(group, classes, handlers, metrics, tracing), self.store,
                                 time_scale, DerivedEvents(topology, classes, group), CloudEventsReader(topology))
        self.handoff = Handoff(self.stop)
        if state is not None:  # a durable store that fails makes the member not ready until it is back
            self.handoff.on_store = lambda reason: state.set_store(group.name, reason)
        self.settler = Settler(group.name, self.handoff.completions)
        self.in_flight = 0
        self.in_flight_by_stream: dict[StreamId, int] = {}
        self.paused: set[StreamId] = set()
        self.high_water = max(1, group.max_in_flight)
        self.low_water = self.high_water // 2
        self.refill = max(1, min(MAX_BATCH, self.high_water // 4))  # least room worth a fetch
        self._stop = threading.Event()
        self._consumer: ConsumerTransport | None = None
        self._inline: Worker | None = None
        self._threads: list[WorkerThread] = []
        self._saturated_since: float | None = None
        self.handled = 0  # settled deliveries (any outcome), for tests and `run_until`
        if metrics is not None:
            metrics.init_group(group)
            self._in_flight_gauge = metrics.in_flight.labels(group.name)
            self._paused_gauge = metrics.paused_partitions.labels(group.name)
            self._progress_gauge = metrics.last_progress.labels(group.name)

    @property
    def generations(self) -> Mapping[StreamId, int]:
        """The generation of each stream assigned so far (work of an older one is stale)."""
        return self.handoff.generations

    @property
    def failure(self) -> BaseException | None:
        """What crashed a worker thread (run() raises it after draining), or None."""
        return self.handoff.failure

    @property
    def paused_streams(self) -> frozenset[StreamId]:
        return frozenset(self.paused)

    def _next_generation(self, streams: Iterable[StreamId]) -> None:
        """Work dispatched for `streams` before now becomes stale. The map is replaced, never
        changed in place: a batch keeps the map of its dispatch as its snapshot."""
        generations = dict(self.handoff.generations)
        for stream in streams:
            generations[stream] = generations.get(stream, 0) + 1
        self.handoff.generations = generations

    # ------------------------------------------------------------------ AssignmentListener

    def on_assigned(self, streams: Sequence[StreamId]) -> None:
        known = self.handoff.generations
        fresh = [stream for stream in streams if stream not in known]
        if fresh:
            # Revocation already moved the generation of a known stream on; work dispatched
            # since stays valid.
            self.handoff.generations = {**known, **dict.fromkeys(fresh, 0)}
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
        completed = self.handoff.completed
        while True:
            self._run_backlog()
            self._settle()
            if not busy() or time.monotonic() >= deadline:
                return
            self._fire_inline_retries()
            completed.wait(BUSY_POLL)
            completed.clear()

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        """Ask the loop to drain and return (safe from signal handlers and other threads)."""
        self._stop.set()
        self.handoff.completed.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Consume until `stop()`, `until()` is true or `timeout` seconds passed, then drain:
        stop fetching, finish the work already fetched within `shutdown_timeout`, settle,
        commit, and leave the group. With both `until` and `timeout`, reaching the timeout with
        `until()` still false raises `UntilTimeout` (after the drain); `timeout` alone is a
        duration, not a failure. An unreachable or lost broker is reported once per change
        (`BrokerLink`) and retried with backoff; a topology not applied raises NotProvisioned."""
        options = ConsumeOptions(max_in_flight=self.high_water,
                                 exactly_once=self.group.delivery is DeliveryMode.EXACTLY_ONCE
                                 and self.transport.supports_exactly_once,
                                 client_id=self.client_id)
        if self.group.delivery is DeliveryMode.EXACTLY_ONCE and not options.exactly_once:
            log.warning("%s: delivery exactly_once needs Kafka transactions; on %s the group runs at-least-once "
                        "with dedup (side effects written through context.transaction stay exactly-once)",
                        self.group.name, self.transport.kind)
        self._start_workers()
        ends = None if timeout is None else time.monotonic() + timeout
        link = BrokerLink(self.group.name, self.state)
        keepalive = None
        if not self.pacing.threaded:
            keepalive = self.keepalive = Keepalive(f"topo-{self.group.name}-keepalive", lambda: self._consumer)
            keepalive.start()
        try:
            timed_out = self._sessions(options, link, until, ends)
            if self.failure is not None:
                raise RuntimeError(f"consumer group {self.group.name}: a worker crashed") from self.failure
            if timed_out:
                assert until is not None and timeout is not None
                raise UntilTimeout(f"consumer group {self.group.name}: {describe_condition(until)} still false "
                                   f"after {timeout:g}s ({self.handled} deliveries settled, "
                                   f"{self.in_flight} in flight)")
        except Exception as error:
            if self.state is not None:
                self.state.fail(f"{type(error).__name__}: {error}")
            raise
        finally:
            if self.state is not None:
                self.state.clear_assignment(self.group.name)
                self.state.set_connected(False)
            for thread in self._threads:
                thread.stop()
            if keepalive is not None:
                keepalive.stop()

    def _sessions(self, options: ConsumeOptions, link: BrokerLink, until: Callable[[], bool] | None,
                  ends: float | None) -> bool:
        """Consume, connecting first and again whenever the broker is unreachable or the
        connection is lost (the lost streams were given up through `on_lost`); drain at the end.
        Returns whether `ends` passed with `until()` still false."""
        while True:
            if not link.reach(lambda: self.transport.probe(group=self.group), self._stop, ends):
                return ends is not None and until is not None and not until()
            try:
                consumer = self._consumer = self.transport.open_consumer(self.group, options)
            except BrokerUnreachable as error:
                link.down(str(error))
                continue
            try:
                consumer.subscribe(self)
                link.up()
                timed_out = False
                while not self._stop.is_set():
                    if until is not None and until():
                        break
                    if ends is not None and time.monotonic() > ends:
                        timed_out = until is not None and not until()
                        break
                    self._iterate(consumer)
                    if consumer.connected is not link.connected:  # Kafka: the client reconnects by itself
                        if consumer.connected:
                            link.up()
                        else:
                            link.down(consumer.disconnect_reason)
                self._drain(consumer)
                return timed_out
            except BrokerUnreachable as error:
                link.down(str(error))
            finally:
                try:
                    with contextlib.suppress(BrokerUnreachable):
                        consumer.close()
                finally:
                    self._consumer = None

    def _start_workers(self) -> None:
        """Inline: the loop thread's worker; worker threads only once they are needed."""
        if not self.pacing.threaded:
            self._inline = Worker(self.handling, self.handoff, self.metrics is not None)
        else:
            self._start_threads()

    def _start_threads(self) -> None:
        if self._threads:
            return
        self._threads = [WorkerThread(f"topo-{self.group.name}-worker-{index}",
                                      Worker(self.handling, self.handoff, self.metrics is not None))
                         for index in range(self.concurrency)]
        for thread in self._threads:
            thread.start()

    def _poke_all(self) -> None:
        """Have every worker release its stale (or, draining, all) parked work."""
        if self._inline is not None:
            self._inline.process(sweep=True)
        for thread in self._threads:
            thread.poke()

    def _fire_inline_retries(self) -> None:
        inline = self._inline
        if inline is not None and inline.timers:
            due = inline.next_due()
            if due is not None and due <= time.monotonic():
                inline.process()

    def _iterate(self, consumer: ConsumerTransport) -> None:
        self._fire_inline_retries()
        progressed = self._settle()
        completed = self.handoff.completed
        room = self.high_water - self.in_flight
        if self.in_flight <= self.low_water:
            self._saturated_since = None
        elif self._saturated_since is None:
            self._saturated_since = time.monotonic()
        if self._backlog:
            # Inline work left from the last slice: serve the connection, then the next slice.
            deliveries = consumer.poll(0, 0.0)
            if deliveries:
                self._dispatch(deliveries)
            self._run_backlog()
            progressed = True
            deliveries = []
        elif self.pacing.probe_due(time.monotonic()) and self._probe_barrier():
            # Trying inline again: nothing new is fetched until the workers are idle.
            completed.wait(BUSY_POLL)
            completed.clear()
            deliveries = consumer.poll(0, 0.0)
        elif room < self.refill and self.in_flight:
            # (Nearly) full: wait for a worthwhile amount of room rather than fetching crumbs,
            # which would make the loop and the workers take turns per event. When in-flight
            # work has stayed above the low-water mark for PAUSE_AFTER, pause every stream (the
            # client then serves its connection without fetching) until it falls to low water.
            if (not self.paused and self._saturated_since is not None
                    and time.monotonic() - self._saturated_since >= PAUSE_AFTER):
                self._pause_all(consumer)
            completed.wait(BUSY_POLL)
            completed.clear()
            deliveries = consumer.poll(0, 0.0)  # serve the connection; nothing new is fetched
        else:
            if self.paused and self.in_flight <= self.low_water:
                self._resume_all(consumer)
            timeout = 0.0 if self.handoff.completions else (BUSY_POLL if self.in_flight else POLL_INTERVAL_MAX)
            due = self._inline.next_due() if self._inline is not None else None
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.monotonic()))
            completed.clear()
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
        generations = self.handoff.generations
        if not self.pacing.threaded:
            self._backlog.append((deliveries, generations))
            self._run_backlog()
            return
        self._submit(deliveries, generations)

    def _submit(self, deliveries: list[Delivery], generations: Mapping[StreamId, int]) -> None:
        threads = self._threads
        count = len(threads)
        if count == 1:
            threads[0].submit((deliveries, generations))
            return
        batches: list[list[Delivery]] = [[] for _ in range(count)]
        for delivery in deliveries:
            key = delivery.key
            batches[hash(key) % count if key is not None else delivery.offset % count].append(delivery)
        for thread, batch in zip(threads, batches, strict=True):
            if batch:
                thread.submit((batch, generations))

    def _run_backlog(self) -> None:
        """Handle inline work, one slice: the loop serves its connection between slices. A slice
        that blocked moves the group to worker threads (adaptive mode; see topo.runtime.pacing)."""
        backlog, inline, pacing = self._backlog, self._inline, self.pacing
        if not backlog or pacing.threaded:
            return
        assert inline is not None
        deliveries, generations = backlog[0]
        meter = self._meter
        meter.start()
        keepalive = self.keepalive
        if keepalive is not None:
            keepalive.enter()
        try:
            taken = inline.run_slice(deliveries, generations, time.perf_counter() + SLICE)
        finally:
            if keepalive is not None:
                keepalive.leave()
        if taken < len(deliveries):
            backlog[0] = (deliveries[taken:], generations)
        else:
            backlog.popleft()
        if not pacing.adaptive:
            return
        if not meter.blocked(taken):
            pacing.quick_slice()
        elif not inline.blocked:  # no parked lane: the workers of the keys can take over in order
            pacing.to_threads(time.monotonic())
            log.info("%s: handlers block (%.1f ms per event): running them on %d worker threads",
                     self.group.name, 1000 * (time.perf_counter() - meter.wall) / max(1, taken), self.concurrency)
            self._start_threads()
            while backlog:
                self._submit(*backlog.popleft())

    def _probe_barrier(self) -> bool:
        """A probe of inline handling is due: True while fetching waits for the workers to go
        idle; switches to inline (and returns False) once nothing is in flight."""
        if self.in_flight == 0:
            self.pacing.to_inline()
            log.info("%s: trying handlers inline again", self.group.name)
            return False
        return self.pacing.hold(time.monotonic())

    def _settle(self) -> bool:
        """Settle every finished piece of work on the transport; True if any was."""
        if not self.handoff.completions:
            return False
        assert self._consumer is not None
        settled = self.settler.settle(self._consumer, self.in_flight_by_stream)
        self.in_flight -= settled
        self.handled += settled
        return True

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
            self.handoff.draining = True
            self._next_generation(list(self.handoff.generations))
            self._poke_all()
            self._wait(lambda: self.in_flight > 0, time.monotonic() + max(1.0, BUSY_POLL * 10))
        consumer.commit()
