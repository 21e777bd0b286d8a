"""Group commit: a worker's handler path for a durable processed store (SQLite, PostgreSQL).

The in-memory store keeps its own loop (`Worker._handle`). With a durable store a worker runs its
deliveries in segments, each inside ONE store transaction:

1. gather the segment: consecutive first attempts of free lanes (at most COMMIT_EVERY), decoded;
2. mark all their ids with one statement; an id marked before is a duplicate (its handler never runs);
3. run the handlers in stream order; one that takes a context runs inside a savepoint, so a
   failure rolls back only its own writes (and its mark is removed);
4. commit once, and only then hand the outcomes to the runner to settle (ack / offset commit).

A segment ends early, its unhandled marks removed, when a handler fails (the failure is placed
after the commit: retry or dead letter, or its key parks behind it) or after COMMIT_AFTER seconds
(slow handlers still settle, and free room, as they go). Anything off the common path (a retry
copy, a stale delivery, a key parked behind a retry) goes through `Worker._admit` between segments.

The bounds: COMMIT_EVERY = 500 is one poll's worth (runner.MAX_BATCH), so a batch costs two
round trips (mark, commit) however many events it holds, and a fast batch commits at the end of
its poll; COMMIT_AFTER = 20 ms bounds how long a success waits for its acknowledgement behind
slow handlers (the memory store hands over every 5 ms), while still amortising a commit's fsync
over every event of those 20 ms.

A store failure (`StoreUnavailable`: server down, connection lost, deadlock) rolls the open
transaction back; nothing of it was handed over, so nothing is acknowledged without its commit.
The worker reports the store down (/readyz: not ready), waits with backoff and runs the
deliveries again from the first one not yet handed over; it reports the store up after the next
commit. Meanwhile the runner's in-flight bound pauses fetching. Guarantees: nothing lost, a side
effect written through `context.transaction` exactly once, per-key order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from topo.core import headers as H
from topo.runtime.dedup.base import ProcessedStore, StoreBatch, StoreUnavailable
from topo.runtime.handling import Done, GroupRoute, Outcome, Sample, Work, outcome
from topo.runtime.transport.base import Delivery, DerivedEvent, StreamId

if TYPE_CHECKING:
    from topo.runtime.worker import Worker

log = logging.getLogger("topo.runtime")

COMMIT_EVERY = 500
COMMIT_AFTER = 0.020
FIRST_BACKOFF = 0.1  # seconds before the first retry of an unavailable store; doubles up to MAX_BACKOFF
MAX_BACKOFF = 5.0


class Entry:
    """One delivery of a segment: decoded (envelope) or not (error)."""

    __slots__ = ("delivery", "envelope", "error", "event_id", "fast", "index", "route", "work")

    def __init__(self, index: int, delivery: Delivery, route: GroupRoute, fast: Any, work: Work | None) -> None:
        self.index = index
        self.delivery = delivery
        self.route = route
        self.fast = fast
        self.work = work
        self.envelope: Any = None
        self.error: Exception | None = None
        self.event_id: Hashable = None


def handle_durable(worker: Worker, deliveries: Sequence[Delivery], generations: Mapping[StreamId, int],
                   pending: Work | None) -> bool:
    """`Worker._handle` for a durable store. Returns False when the last delivery was parked."""
    backoff = FIRST_BACKOFF
    start = 0
    while True:
        run = Segments(worker, deliveries, generations, pending, start)
        try:
            return run.all()
        except StoreUnavailable as error:
            start = run.handed_over
            worker.handoff.store_trouble(str(error))
            remaining = deliveries[start:]
            if worker.handoff.draining:  # shutdown past its deadline: give the rest back
                for delivery in remaining:
                    work = pending or worker.handling.work(delivery, worker.handling.route_of(delivery), generations)
                    worker._report(outcome(work, Outcome.RELEASE))
                return True
            time.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


class Segments:
    """One pass over a worker's deliveries from `start` (see the module docstring)."""

    def __init__(self, worker: Worker, deliveries: Sequence[Delivery], generations: Mapping[StreamId, int],
                 pending: Work | None, start: int) -> None:
        self.worker = worker
        self.handling = worker.handling
        store = self.handling.durable
        assert store is not None
        self.store: ProcessedStore = store
        self.deliveries = deliveries
        self.generations = generations
        self.pending = pending
        self.handed_over = start  # deliveries before this index are settled or handed to the runner
        self.items: list[Delivery | Work] = []  # outcomes of the open transaction, in stream order
        # Events the handlers of those successes published (by id of the delivery): handed over
        # with them after the commit, dropped with a rolled-back transaction.
        self.derived: dict[int, list[DerivedEvent]] = {}
        self.samples: list[Sample] | None = [] if worker.metrics else None
        self.finished = True

    def all(self) -> bool:
        index = self.handed_over
        deliveries = self.deliveries
        while index < len(deliveries):
            segment = self.gather(index)
            if not segment:  # deliveries[index] is off the common path
                self.worker._admit(deliveries[index], self.generations)
                index = self.handed_over = index + 1
                continue
            index = self.run(segment)
        return self.finished

    def gather(self, index: int) -> list[Entry]:
        handling, handoff, pending = self.handling, self.worker.handoff, self.pending
        generations = self.generations
        current = generations is handoff.generations
        blocked = self.worker.blocked
        steps_of = handling.steps.get
        segment: list[Entry] = []
        for position in range(index, min(len(self.deliveries), index + COMMIT_EVERY)):
            delivery = self.deliveries[position]
            if pending is not None:
                assert pending.route is not None
                entry = Entry(position, delivery, pending.route, pending.route.fast, pending)
            else:
                headers = delivery.headers
                steps = steps_of(delivery.topic)
                if (steps is None
                        or (headers and (H.ATTEMPT in headers or H.ORIGINAL_TOPIC in headers))
                        or (not current
                            and generations.get(delivery.stream) != handoff.generations.get(delivery.stream))
                        or (blocked and (delivery.stream, delivery.key) in blocked)):
                    break
                route, _, fast = steps
                entry = Entry(position, delivery, route, fast, None)
            try:
                entry.envelope = entry.route.decode(delivery.body)
                entry.event_id = str(entry.envelope.event_id)
            except (ValidationError, ValueError) as error:
                entry.error = error
            segment.append(entry)
        return segment

    def work(self, entry: Entry) -> Work:
        return entry.work or self.handling.work(entry.delivery, entry.route, self.generations)

    def run(self, segment: list[Entry]) -> int:
        """Handle `segment` in one transaction; the index of the first delivery not handled."""
        batch = self.store.begin()
        try:
            return self._run(batch, segment)
        except BaseException:
            batch.abandon()  # a no-op after commit; else the transaction rolls back
            raise

    def _run(self, batch: StoreBatch, segment: list[Entry]) -> int:
        handling = self.handling
        fresh = batch.mark([e.event_id for e in segment if e.error is None])
        clock = time.perf_counter
        opened = clock()
        items, samples = self.items, self.samples
        for position, entry in enumerate(segment):
            if entry.error is not None:
                items.append(handling.poison(self.work(entry), entry.error))
                continue
            event_id = entry.event_id
            if event_id not in fresh:
                items.append(outcome(self.work(entry), Outcome.DUPLICATE))
                continue
            fresh.discard(event_id)  # handled from here on (a repeated id in the segment is a duplicate)
            envelope = entry.envelope
            started = clock()
            try:
                if entry.fast is None:
                    batch.savepoint()
                    context = handling.context(entry.delivery, entry.route, entry.work, batch.transaction, envelope)
                    entry.route.call(envelope, context)
                    if context.outbox is not None and context.outbox.events:
                        self.derived[id(entry.delivery)] = context.outbox.events
                else:
                    entry.fast(envelope)
            except StoreUnavailable:
                raise
            except Exception as error:
                if entry.fast is None:
                    batch.rollback_to_savepoint()
                fresh.add(event_id)
                self.commit(batch, fresh, entry.index)
                work = handling.failed(self.work(entry), entry.route, envelope, error, started)
                self.finished = self.worker._place(work)
                self.handed_over = entry.index + 1
                return entry.index + 1
            items.append(entry.delivery)
            now = clock()
            if samples is not None:
                samples.append((entry.route, now - started, time.time() - envelope.timestamp.timestamp()))
            if now - opened >= COMMIT_AFTER and position + 1 < len(segment):
                following = segment[position + 1].index
                self.commit(batch, fresh, following)
                self.worker.handoff.completed.set()
                return following
        end = segment[-1].index + 1
        self.commit(batch, fresh, end)
        return end

    def commit(self, batch: StoreBatch, unhandled: set[Hashable], handed_over: int) -> None:
        """Forget the marks of `unhandled`, commit, then hand the outcomes over in stream order."""
        batch.unmark(unhandled)
        batch.commit()
        self.worker.handoff.store_ok()
        self.handed_over = handed_over
        self.finished = True
        items, samples = self.items, self.samples
        successes: list[Delivery] = []
        taken = 0
        report = self.worker._report
        for item in items:
            if type(item) is Work:
                if successes:
                    report(self._done(successes, samples, taken))
                    taken += len(successes)
                    successes = []
                report(item)
            else:
                successes.append(item)  # type: ignore[arg-type]
        if successes:
            report(self._done(successes, samples, taken))
        items.clear()
        self.derived.clear()
        if samples is not None:
            samples.clear()

    def _done(self, successes: list[Delivery], samples: list[Sample] | None, taken: int) -> Done:
        derived = self.derived
        published = {index: derived[id(delivery)] for index, delivery in enumerate(successes)
                     if id(delivery) in derived} if derived else None
        return Done(successes, samples[taken:taken + len(successes)] if samples is not None else None,
                    published or None)
