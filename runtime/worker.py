"""Workers: run the handler path for the deliveries of the keys hashed to them, in order.

A worker takes batches of deliveries (one poll's worth for its keys) and runs each through the
one handler path, `Worker._handle` (decode → dedup → call → outcome). Successes are collected
in stream order and handed to the runner as one `Done` per batch (or every SETTLE_AFTER, so
slow handlers free room as they go); any other outcome is handed over as its `Work`, after the
successes before it. An ordered event that must
retry in place parks its lane (its key's later events wait behind it, in order) and the worker
keeps serving the other keys; the retry fires from the worker's own timer.

With a durable processed store (SQLite, PostgreSQL) the path is `topo.runtime.group_commit`:
a batch in one store transaction, its outcomes handed over only after the commit.

`Worker` is the executor; it runs on the loop thread for an inline runner (concurrency 0), or
inside a `WorkerThread`. Either way it sees the runner only through a `Handoff`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import ValidationError

from topo.core import headers as H
from topo.runtime.group_commit import handle_durable
from topo.runtime.handling import Done, Handling, Lane, Outcome, Sample, Work, outcome
from topo.runtime.transport.base import Delivery, DerivedEvent, StreamId

log = logging.getLogger("topo.runtime")

# A worker hands its successes to the loop thread at the end of a batch, or once this long has
# passed since it last did (so slow handlers settle, and free room, as they go).
SETTLE_AFTER = 0.005

# Deliveries of one poll for one worker, with the generations map current when they were
# dispatched (the runner replaces that map rather than changing it, so it is a snapshot).
Batch = tuple[list[Delivery], Mapping[StreamId, int]]


class Handoff:
    """All the runner and its workers share: workers append outcomes to `completions` and set
    `completed`; the runner settles them, and owns `generations` and `draining`."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.completions: deque[Work | Done] = deque()
        self.completed = threading.Event()
        self.generations: Mapping[StreamId, int] = {}  # replaced, never changed in place
        self.draining = False  # shutdown past its deadline: parked work is released
        self.failure: BaseException | None = None  # a worker thread crashed
        self.stop = stop
        # A durable processed store that fails: the group acknowledges nothing until it is back.
        self.store_down: str | None = None
        self.on_store: Callable[[str | None], None] | None = None  # told each change (None: available)
        self._store_lock = threading.Lock()

    def store_trouble(self, reason: str) -> None:
        """A worker's store transaction failed; it retries with backoff."""
        with self._store_lock:
            first = self.store_down is None
            self.store_down = reason
        if first:
            log.warning("processed store unavailable: %s; nothing is acknowledged until it is back, retrying",
                        reason)
            if self.on_store is not None:
                self.on_store(reason)

    def store_ok(self) -> None:
        """A store transaction committed (called per commit: one attribute read when all is well)."""
        if self.store_down is None:
            return
        with self._store_lock:
            was, self.store_down = self.store_down, None
        if was is not None:
            log.warning("processed store available again; acknowledging resumes")
            if self.on_store is not None:
                self.on_store(None)

    def crashed(self, error: BaseException) -> None:
        self.failure = error
        self.stop()


class Worker:
    """Runs handlers for its keys, in order; parks lanes that retry in place."""

    def __init__(self, handling: Handling, handoff: Handoff, metrics: bool) -> None:
        self.handling = handling
        self.handoff = handoff
        self.metrics = metrics  # collect per-success samples for the runner's metrics
        self.blocked: dict[Lane, deque[Work]] = {}
        self.timers: list[tuple[float, int, Lane]] = []
        self.sequence = itertools.count()
        self.ends = math.inf  # run_slice: stop after a success finishing at this perf_counter time
        self.taken = 0  # run_slice: how many deliveries the last slice took
        self.derived: dict[int, list[DerivedEvent]] = {}  # of the successes not yet handed over

    def next_due(self) -> float | None:
        """When the earliest in-place retry is due (time.monotonic), or None."""
        return self.timers[0][0] if self.timers else None

    def process(self, batches: Iterable[Batch] = (), sweep: bool = False) -> None:
        """Handle `batches` in order, fire due in-place retries, and (sweep) release parked work
        that is stale or, while draining, any."""
        for deliveries, generations in batches:
            self._handle(deliveries, generations)
        if self.timers:
            self._fire_due()
        if sweep:
            self._sweep()
        handoff = self.handoff
        if handoff.completions and not handoff.completed.is_set():
            handoff.completed.set()

    def run_slice(self, deliveries: Sequence[Delivery], generations: Mapping[StreamId, int], ends: float) -> int:
        """Inline (on the loop thread): handle `deliveries` in order, stopping after the first
        success that finishes at or after `ends` (time.perf_counter), so the loop serves its
        connection between slices; returns how many were taken (the rest is untouched)."""
        self.ends, self.taken = ends, len(deliveries)
        try:
            self._handle(deliveries, generations)
        finally:
            self.ends = math.inf
        return self.taken

    def _handle(self, deliveries: Sequence[Delivery], generations: Mapping[StreamId, int],
                pending: Work | None = None) -> bool:
        """The one handler path: decode → dedup → call → outcome, for each delivery in order.

        A batch (`pending` None): a first attempt of a subscribed event whose lane is free runs
        here without a `Work` (the common case; nothing is allocated for it but its envelope);
        a retry copy, a CloudEvent (converted by `Handling.body_of`), a stale delivery or one behind
        a parked key goes to `_admit`, which comes back here with its `Work` as `pending` (and
        `deliveries` its delivery alone), as does a
        parked event, or one waiting behind it, when its lane's timer fires. Successes are
        handed over in order as a `Done`; any other outcome goes to `_place`, after the
        successes before it. Returns False when the last delivery was parked for an in-place
        retry."""
        handling, handoff = self.handling, self.handoff
        memory = handling.memory
        if memory is None:  # a durable store: one transaction per batch (topo.runtime.group_commit)
            return handle_durable(self, deliveries, generations, pending)
        steps_of = handling.steps.get
        seen, add = memory.seen, memory.add
        blocked = self.blocked
        current = generations is handoff.generations
        samples: list[Sample] | None = [] if self.metrics else None
        done: list[Delivery] = []
        derived = self.derived  # events handlers published, by index in `done`
        clock = time.perf_counter
        flushed = started = clock()
        attempt_header, original_header, settle_after = H.ATTEMPT, H.ORIGINAL_TOPIC, SETTLE_AFTER
        cloudevent_ids = H.CLOUDEVENTS_ID_HEADERS
        finished = True
        ends = self.ends if pending is None else math.inf
        # Branches put the common case (a first attempt, the in-memory store, a one-argument
        # handler) in their `else`: it then runs without a jump over the other case.
        for index, delivery in enumerate(deliveries):
            if pending is not None:
                assert pending.route is not None  # _admit dead-letters unsubscribed deliveries
                route = pending.route
                decode, fast = route.decode, route.fast
            else:
                headers = delivery.headers
                steps = steps_of(delivery.topic)
                if (steps is None
                        or (headers and (attempt_header in headers or original_header in headers
                                         or not cloudevent_ids.isdisjoint(headers)))
                        or (not current
                            and generations.get(delivery.stream) != handoff.generations.get(delivery.stream))
                        or (blocked and (delivery.stream, delivery.key) in blocked)):
                    self._flush(done, samples)
                    self._admit(delivery, generations)
                    continue
                route, decode, fast = steps
            try:
                envelope = decode(delivery.body if pending is None else handling.body_of(delivery))
            except (ValidationError, ValueError) as error:
                work = pending or handling.work(delivery, route, generations)
                finished = self._divert(done, samples, handling.poison(work, error))
                continue
            # The in-memory store keys on the UUID's integer (hashed in C; formatting costs more).
            event_id = envelope.event_id.int
            if seen(event_id):
                work = pending or handling.work(delivery, route, generations)
                finished = self._divert(done, samples, outcome(work, Outcome.DUPLICATE))
                continue
            if samples is not None:
                started = clock()
            try:
                if fast is None:
                    context = handling.context(delivery, route, pending, None, envelope)
                    route.call(envelope, context)
                else:
                    fast(envelope)
                add(event_id, None)  # the window is trimmed once per `Done` (`_flush`)
            except Exception as error:
                work = pending or handling.work(delivery, route, generations)
                finished = self._divert(done, samples, handling.failed(work, route, envelope, error, started))
                continue
            if fast is None and context.outbox is not None and context.outbox.events:
                derived[len(done)] = context.outbox.events
            done.append(delivery)
            now = clock()
            if samples is not None:
                # Recorded by the loop thread when it settles: metric locks shared by worker
                # threads would make them take turns on the GIL per event.
                samples.append((route, now - started, time.time() - envelope.timestamp.timestamp()))
            if now - flushed >= settle_after:  # slow handlers: settle as they finish, not per batch
                self._flush(done, samples)
                handoff.completed.set()
                flushed = now
                if now >= ends:  # an inline slice is over: the loop takes the rest later
                    self.taken = index + 1
                    break
        self._flush(done, samples)
        return finished

    def _flush(self, done: list[Delivery], samples: list[Sample] | None) -> None:
        """Hand the successes so far to the loop thread."""
        if done:
            self.handling.trim()
            derived = self.derived
            self.handoff.completions.append(Done(done[:], samples[:] if samples is not None else None,
                                                 dict(derived) if derived else None))
            derived.clear()
            done.clear()
            if samples is not None:
                samples.clear()

    def _divert(self, done: list[Delivery], samples: list[Sample] | None, work: Work) -> bool:
        """A delivery that did not simply succeed: the successes before it first (stream order)."""
        self._flush(done, samples)
        return self._place(work)

    def _admit(self, delivery: Delivery, generations: Mapping[StreamId, int]) -> None:
        """One delivery off the common case: stale, unsubscribed, parked behind its key, or attempted."""
        handling = self.handling
        work = handling.work(delivery, handling.route_of(delivery), generations)
        if work.generation != self.handoff.generations.get(work.lane[0]):
            self._report(outcome(work, Outcome.RELEASE))
        elif work.route is None:
            self._report(handling.unsubscribed(work))
        elif work.lane in self.blocked:
            self.blocked[work.lane].append(work)  # behind its key's retrying event
        else:
            self._handle((delivery,), generations, work)

    def _place(self, work: Work) -> bool:
        """Park `work` (PARK: its lane waits for the timer) or report it; False when parked."""
        if work.outcome is not Outcome.PARK:
            self._report(work)
            return True
        waiting = self.blocked.setdefault(work.lane, deque())
        if not waiting or waiting[0] is not work:
            waiting.appendleft(work)
        due = time.monotonic() + work.delay * self.handling.time_scale
        heapq.heappush(self.timers, (due, next(self.sequence), work.lane))
        return False

    def _report(self, item: Work | Done) -> None:
        self.handoff.completions.append(item)  # `completed` is set once per batch (`process`)

    def _fire_due(self) -> None:
        generations = self.handoff.generations
        while self.timers and self.timers[0][0] <= time.monotonic():
            _, _, lane = heapq.heappop(self.timers)
            waiting = self.blocked.get(lane)
            while waiting:
                work = waiting[0]
                if work.generation != generations.get(work.delivery.stream):
                    waiting.popleft()
                    self._report(outcome(work, Outcome.RELEASE))
                    continue
                if not self._handle((work.delivery,), generations, work):
                    break  # failed again: a new timer is set; the key stays parked
                waiting.popleft()
            if lane in self.blocked and not self.blocked[lane]:
                del self.blocked[lane]

    def _sweep(self) -> None:
        handoff = self.handoff
        generations = handoff.generations
        for lane in list(self.blocked):
            waiting = self.blocked[lane]
            if handoff.draining or any(w.generation != generations.get(w.delivery.stream) for w in waiting):
                for work in waiting:
                    self._report(outcome(work, Outcome.RELEASE))
                del self.blocked[lane]
        live = set(self.blocked)
        self.timers = [t for t in self.timers if t[2] in live]
        heapq.heapify(self.timers)


class WorkerThread(threading.Thread):
    """A `Worker` on its own thread, fed batches by the loop thread."""

    def __init__(self, name: str, worker: Worker) -> None:
        super().__init__(name=name, daemon=True)
        self.worker = worker
        self.inbox: deque[Batch] = deque()
        self.wakeup = threading.Condition()
        self.sweep = False  # set by the loop thread: release stale or (draining) parked work
        self.stopping = False

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
        worker = self.worker
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
                worker.process(batches, sweep)
            except BaseException as error:  # a bug, or SystemExit from a handler: stop, never hang
                log.critical("%s: worker %s crashed: %r; stopping the group", worker.handling.group.name,
                             self.name, error, exc_info=error)
                worker.handoff.crashed(error)
                return

    def _due(self) -> bool:
        due = self.worker.next_due()
        return due is not None and due <= time.monotonic()

    def _wait_time(self) -> float | None:
        due = self.worker.next_due()
        return None if due is None else max(0.0, due - time.monotonic())
