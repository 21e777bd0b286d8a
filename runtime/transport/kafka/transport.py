"""The Kafka `Transport`: opens the publisher, group consumers, tails and dead-letter readers of
one topology, each with the core's client settings (`topo.core.connect.kafka_config`)."""

from __future__ import annotations

from collections.abc import Sequence

from topo.core.model import ConsumerGroup, EventTopic
from topo.runtime.transport.base import ConsumeOptions, Transport
from topo.runtime.transport.kafka.config import client_config
from topo.runtime.transport.kafka.consumer import KafkaConsumer
from topo.runtime.transport.kafka.dead_letters import KafkaDeadLetters
from topo.runtime.transport.kafka.probe import group_topics, probe
from topo.runtime.transport.kafka.publisher import KafkaPublisher
from topo.runtime.transport.kafka.tail import KafkaTail


class KafkaTransport(Transport):
    kind = "kafka"
    supports_exactly_once = True

    def open_publisher(self, producer_name: str = "") -> KafkaPublisher:
        suffix = f"-{producer_name}" if producer_name else ""
        return KafkaPublisher(client_config(self.topology.kafka, f"topo-publisher{suffix}"))

    def open_consumer(self, group: ConsumerGroup, options: ConsumeOptions) -> KafkaConsumer:
        return KafkaConsumer(self.topology, group, options)

    def open_tail(self, topics: Sequence[EventTopic], from_beginning: bool = False) -> KafkaTail:
        return KafkaTail(self.topology, [t.topic for t in topics], from_beginning)

    def probe(self, topics: Sequence[EventTopic] = (), group: ConsumerGroup | None = None) -> None:
        names = [t.topic for t in topics] + (group_topics(group) if group is not None else [])
        probe(self.topology, sorted(set(names)))

    def open_dead_letters(self, group: ConsumerGroup) -> KafkaDeadLetters:
        return KafkaDeadLetters(self.topology, group)
