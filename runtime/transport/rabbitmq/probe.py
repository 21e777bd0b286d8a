"""Reaching RabbitMQ within a bounded time, and checking that the topology's exchange and a group's
queues exist (passive declarations: nothing is created), with one-line errors."""

from __future__ import annotations

import contextlib

import pika
import pika.exceptions

from topo.core.client_logs import PIKA_LOGGER, client_logs_silenced
from topo.core.model import ConsumerGroup, Topology
from topo.runtime.transport.base import NotProvisioned, TransportError
from topo.runtime.transport.rabbitmq.connection import AMQP_ERRORS, Nodes, connect, describe, where


def probe(params: Nodes, topology: Topology, exchange: bool, group: ConsumerGroup | None) -> None:
    """Connect (BrokerUnreachable on failure) and passively declare the topology exchange (when
    `exchange`) and the group's work, wait and dead-letter queues; NotProvisioned names the first missing."""
    with client_logs_silenced(PIKA_LOGGER):
        _probe(params, topology, exchange, group)


def _probe(params: Nodes, topology: Topology, exchange: bool, group: ConsumerGroup | None) -> None:
    connection = connect(params)
    try:
        wanted = exchange or group is not None
        objects: list[tuple[str, str]] = [("exchange", topology.rabbitmq.exchange)] if wanted else []
        if group is not None:
            plumbing = group.rabbitmq
            objects += [("queue", q) for q in plumbing.queues]
            objects += [("queue", r.name) for r in plumbing.retry_queues]
            objects += [("queue", plumbing.dlq_queue)]
        channel = connection.channel()
        for kind, name in objects:
            try:
                if kind == "exchange":
                    channel.exchange_declare(name, passive=True)
                else:
                    channel.queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == 404:
                    raise NotProvisioned("rabbitmq", f"{kind} {name!r} on {where(params)}", topology.name) from None
                raise TransportError(f"rabbitmq: checking {kind} {name!r} on {where(params)} failed: "
                                     f"{describe(error)}") from None
    except AMQP_ERRORS as error:
        raise TransportError(f"rabbitmq: {where(params)}: checking the topology failed: {describe(error)}") from None
    finally:
        with contextlib.suppress(*AMQP_ERRORS):
            if connection.is_open:
                connection.close()
