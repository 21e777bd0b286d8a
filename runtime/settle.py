"""Settlement: the one place where outcomes reach the transport (ack, publish_and_ack for a
success whose handler published events, retry_later, dead_letter, release) and where the metrics
of finished work are recorded. Runs on the loop thread only."""

from __future__ import annotations

import itertools
import logging
import operator
from collections import deque

from topo.core import headers as H
from topo.runtime.handling import Done, Outcome, Work
from topo.runtime.transport.base import ConsumerTransport, Delivery, StreamId

log = logging.getLogger("topo.runtime")

STREAM_OF = operator.attrgetter("source", "partition")  # Delivery.stream, computed in C


class Settler:
    """Settles the outcomes workers handed over, in completion order (stream order per key)."""

    def __init__(self, group_name: str, completions: deque[Work | Done]) -> None:
        self.group_name = group_name
        self.completions = completions

    def settle(self, consumer: ConsumerTransport, in_flight_by_stream: dict[StreamId, int]) -> int:
        """Settle every finished piece of work on `consumer`; the number of deliveries settled."""
        completions = self.completions
        acks: list[Delivery] = []
        released: list[Delivery] = []
        settled = 0
        while completions:
            item = completions.popleft()
            if type(item) is Done:
                deliveries = item.deliveries
                if item.derived is None:
                    acks += deliveries
                else:  # each with the events its handler published (before, or with, its ack)
                    derived = item.derived
                    for index, delivery in enumerate(deliveries):
                        if index in derived:
                            consumer.publish_and_ack(delivery, derived[index])
                        else:
                            acks.append(delivery)
                settled += len(deliveries)
                for stream, run in itertools.groupby(deliveries, STREAM_OF):  # runs per partition
                    if stream in in_flight_by_stream:  # a revoked stream's count is gone
                        in_flight_by_stream[stream] -= len(list(run))
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
            if stream in in_flight_by_stream:
                in_flight_by_stream[stream] -= 1
        if acks:
            consumer.ack(acks)
        if released:
            consumer.release(released)
        return settled

    def _settle_work(self, consumer: ConsumerTransport, work: Work, acks: list[Delivery],
                     released: list[Delivery]) -> None:
        delivery = work.delivery
        result = work.outcome
        route = work.route
        if result is Outcome.DUPLICATE:
            acks.append(delivery)
            if route is not None and route.duplicates is not None:
                route.duplicates.inc()
        elif result is Outcome.RELEASE:
            released.append(delivery)
        else:
            if acks:  # keep settling order per stream
                consumer.ack(acks)
                acks.clear()
            assert work.headers is not None
            if result is Outcome.RETRY:
                consumer.retry_later(delivery, work.delay, work.headers)
            elif result is Outcome.DEAD:
                consumer.dead_letter(delivery, work.headers)
                reason = work.headers.get(H.DEAD_LETTER_REASON, H.REASON_POISON)
                if route is not None and route.dead:
                    route.dead[reason].inc()
                log.error("%s: dead-lettered %s[%d]@%d (%s): %s", self.group_name, delivery.source,
                          delivery.partition, delivery.offset, reason, work.headers.get(H.ERROR_MESSAGE))
            else:
                raise AssertionError(f"{result} is not settled by the runner")
