"""`topo dlq list|replay` on RabbitMQ: reading a group's dead-letter queue."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pika
import pika.exceptions

from topo.core.model import ConsumerGroup, Topology
from topo.runtime.transport.base import DeadLetterReader, Delivery, TransportError
from topo.runtime.transport.rabbitmq.connection import AMQP_ERRORS, Nodes, connect, describe, where
from topo.runtime.transport.rabbitmq.messages import make_delivery


class RabbitMQDeadLetters(DeadLetterReader):
    """Reads a group's DLQ with basic.get (the DLQ is a quorum queue without single-active-consumer).

    `browse` reads on a throwaway channel and closes it, which returns every message to the queue;
    `take` keeps its messages unacked on a long-lived channel until `done` acks them. Replayed
    letters leave the queue, so everything browsed is pending and no replay record is kept.
    """

    def __init__(self, params: Nodes, topology: Topology, group: ConsumerGroup) -> None:
        self._params = params
        self._key_header = topology.rabbitmq.key_header
        self._queue = group.rabbitmq.dlq_queue
        self._connection = connect(params)
        self._taking: Any = None

    def _get(self, channel: Any, limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        found: list[Delivery] = []
        while len(found) < limit:
            method, properties, body = channel.basic_get(self._queue, auto_ack=False)
            if method is None:
                # Empty: give a dead letter still being written a moment, within the timeout.
                if found or time.monotonic() >= deadline:
                    break
                self._connection.process_data_events(time_limit=min(0.05, max(deadline - time.monotonic(), 0)))
                continue
            found.append(make_delivery(self._queue, 0, channel, method, properties, body, self._key_header))
        return found

    def browse(self, limit: int, timeout: float, *, replayed: bool = True) -> list[Delivery]:
        try:
            channel = self._connection.channel()
            try:
                return self._get(channel, limit, timeout)
            finally:
                channel.close()  # returns everything read to the queue, in order
        except pika.exceptions.ChannelClosedByBroker as error:
            raise TransportError(f"{where(self._params)}: cannot read dead-letter queue {self._queue!r}: "
                                 f"{describe(error)}") from error
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: browsing {self._queue!r} failed: {describe(error)}") \
                from error

    def take(self, limit: int, timeout: float) -> list[Delivery]:
        try:
            if self._taking is None or not self._taking.is_open:
                self._taking = self._connection.channel()
            return self._get(self._taking, limit, timeout)
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: reading {self._queue!r} failed: {describe(error)}") \
                from error

    def done(self, deliveries: Iterable[Delivery], replayed_at: str = "") -> None:
        pending = list(deliveries)
        if not pending:
            return
        if self._taking is None:
            raise TransportError("done() called for dead letters that were not taken with take()")
        try:
            for delivery in pending:
                self._taking.basic_ack(delivery.offset)
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: removing replayed dead letters from {self._queue!r} "
                                 f"failed: {describe(error)}; they stay in the queue") from error

    def close(self) -> None:
        try:
            if self._connection.is_open:
                self._connection.close()  # anything taken and not done returns to the queue
        except AMQP_ERRORS:
            pass
