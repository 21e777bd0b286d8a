"""`topo tail` on RabbitMQ: an exclusive, auto-delete, server-named queue bound to the topology
exchange with the tailed topics' routing keys. RabbitMQ keeps no history for a new queue, so a
tail sees the events published after it was opened."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from topo.core.model import EventTopic, Topology
from topo.runtime.transport.base import Delivery, Tail, TransportError
from topo.runtime.transport.rabbitmq.connection import AMQP_ERRORS, Nodes, connect, describe, where
from topo.runtime.transport.rabbitmq.messages import make_delivery

TAIL_PREFETCH = 500


class RabbitMQTail(Tail):
    """Consumes its own queue from `poll()` on the caller's thread; settles on hand-out."""

    def __init__(self, params: Nodes, topology: Topology, topics: Sequence[EventTopic]) -> None:
        self._params = params
        self._key_header = topology.rabbitmq.key_header
        self._buffer: deque[Delivery] = deque()
        self._connection = connect(params)
        exchange = topology.rabbitmq.exchange
        try:
            self._channel = self._connection.channel()
            declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self._queue: str = declared.method.queue
            for routing_key in sorted({topic.routing_key for topic in topics}):
                self._channel.queue_bind(self._queue, exchange, routing_key=routing_key)
            self._channel.basic_qos(prefetch_count=TAIL_PREFETCH)
            self._channel.basic_consume(self._queue, self._on_message)
        except AMQP_ERRORS as error:
            self.close()
            raise TransportError(f"{where(params)}: binding a tail queue to exchange {exchange!r} failed: "
                                 f"{describe(error)}") from error

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._buffer.append(make_delivery(self._queue, 0, channel, method, properties, body, self._key_header))

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        try:
            self._connection.process_data_events(time_limit=0 if self._buffer else max(timeout, 0.0))
        except AMQP_ERRORS as error:
            raise TransportError(f"tail connection to {where(self._params)} is gone: {describe(error)}") from error
        batch: list[Delivery] = []
        while self._buffer and len(batch) < max_messages:
            batch.append(self._buffer.popleft())
        if batch:
            # A tail owns its throwaway queue: settle on hand-out, one multiple-ack per batch.
            try:
                self._channel.basic_ack(batch[-1].offset, multiple=True)
            except AMQP_ERRORS as error:
                raise TransportError(f"{where(self._params)}: tail ack failed: {describe(error)}") from error
        return batch

    def close(self) -> None:
        self._buffer.clear()
        with contextlib.suppress(*AMQP_ERRORS):  # already gone: the broker deletes the queue anyway
            if self._connection.is_open:
                self._connection.close()
