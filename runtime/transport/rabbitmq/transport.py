"""The RabbitMQ `Transport`: opens the publisher, group consumers, tails and dead-letter readers
of one topology, and declares its objects over AMQP (`provision`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.transport.base import (
    ConsumeOptions,
    ConsumerTransport,
    DeadLetterReader,
    PublisherTransport,
    Tail,
    Transport,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.rabbitmq.connection import AMQP_ERRORS, Nodes, connect, describe, node_parameters, where
from topo.runtime.transport.rabbitmq.consumer import RabbitMQConsumer
from topo.runtime.transport.rabbitmq.dead_letters import RabbitMQDeadLetters
from topo.runtime.transport.rabbitmq.declare import declare
from topo.runtime.transport.rabbitmq.probe import probe
from topo.runtime.transport.rabbitmq.publisher import RabbitMQPublisher
from topo.runtime.transport.rabbitmq.tail import RabbitMQTail


def provision(topology: Topology, url: str | None = None) -> None:
    """Declare the topology's exchanges, queues and bindings over AMQP (idempotent): the same
    objects `topo apply` creates, for tests and for brokers without the management plugin."""
    params = node_parameters(topology.rabbitmq, "provision", url)
    connection = connect(params)
    try:
        declare(connection.channel(), topology)
    except AMQP_ERRORS as error:
        raise TransportError(f"{where(params)}: declaring the plumbing of topology {topology.name} failed: "
                             f"{describe(error)}") from error
    finally:
        with contextlib.suppress(*AMQP_ERRORS):
            if connection.is_open:
                connection.close()


class RabbitMQTransport(Transport):
    """Factory for RabbitMQ clients of one topology.

    Options: `url` overrides `broker.rabbitmq.url` (same `${VAR}` syntax); `max_unconfirmed`
    bounds a publisher's messages awaiting confirmation (publish blocks beyond it, for at most
    `publish_timeout` seconds, then raises TransportError).
    """

    kind: ClassVar[str] = "rabbitmq"
    supports_exactly_once: ClassVar[bool] = False

    def __init__(self, topology: Topology, *, url: str | None = None, max_unconfirmed: int = 10_000,
                 publish_timeout: float = 30.0) -> None:
        super().__init__(topology)
        if max_unconfirmed < 1:
            raise ValueError(f"max_unconfirmed must be at least 1, got {max_unconfirmed}")
        self.url = url
        self.max_unconfirmed = max_unconfirmed
        self.publish_timeout = publish_timeout
        self._publishers: list[RabbitMQPublisher] = []

    def _params(self, role: str) -> Nodes:
        """Every node of the URL (a cluster's, comma-separated): clients connect to whichever answers."""
        return node_parameters(self.topology.rabbitmq, role, self.url)

    def open_publisher(self, producer_name: str = "") -> PublisherTransport:
        publisher = RabbitMQPublisher(
            self._params(f"publisher {producer_name}".strip()), self.topology.rabbitmq.exchange,
            self.topology.rabbitmq.key_header, max_unconfirmed=self.max_unconfirmed,
            publish_timeout=self.publish_timeout)
        self._publishers.append(publisher)
        return publisher

    def open_consumer(self, group: ConsumerGroup, options: ConsumeOptions) -> ConsumerTransport:
        if options.exactly_once:
            raise Unsupported(
                f"group {group.name}: exactly-once delivery needs Kafka transactions; RabbitMQ has none. "
                "Run this group on Kafka, or declare it `delivery: at_least_once` and rely on "
                "deduplication by event_id (the SQLite store survives restarts)")
        return RabbitMQConsumer(self._params(f"consumer {group.name}"), self.topology, group, options,
                                publish_timeout=self.publish_timeout)

    def open_tail(self, topics: Sequence[EventTopic], from_beginning: bool = False) -> Tail:
        # RabbitMQ keeps no history for a new queue: a tail sees events published after it started.
        return RabbitMQTail(self._params("tail"), self.topology, topics)

    def probe(self, topics: Sequence[EventTopic] = (), group: ConsumerGroup | None = None) -> None:
        probe(self._params("probe"), self.topology, exchange=bool(topics), group=group)

    def open_dead_letters(self, group: ConsumerGroup) -> DeadLetterReader:
        return RabbitMQDeadLetters(self._params(f"dead letters {group.name}"), self.topology, group)

    def close(self) -> None:
        publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            publisher.close(timeout=5.0)
