"""`topo dlq list|replay` on Kafka: reading a group's dead-letter topic.

`browse` reads with a throwaway consumer from the beginning; `take` reads from the offsets the
replay group `<group_id>.dlq-replay` committed, and `done` commits past what was replayed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from topo.core.model import ConsumerGroup, Topology
from topo.runtime.transport.base import DeadLetterReader, Delivery, TransportError
from topo.runtime.transport.kafka.config import client_config, to_delivery


class KafkaDeadLetters(DeadLetterReader):
    def __init__(self, topology: Topology, group: ConsumerGroup) -> None:
        self.topology = topology
        self.group = group
        self.topic = group.kafka.dlq_topic
        self.taker: Consumer | None = None

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        found = consumer.list_topics(topic=self.topic, timeout=10).topics.get(self.topic)
        if found is None or found.error is not None:
            raise TransportError(f"kafka: dead-letter topic {self.topic} does not exist; run `topo apply`")
        return [TopicPartition(self.topic, p) for p in sorted(found.partitions)]

    def _read(self, consumer: Consumer, partitions: list[TopicPartition], limit: int, timeout: float
              ) -> list[Delivery]:
        ends = {}
        for partition in partitions:
            _low, high = consumer.get_watermark_offsets(partition, timeout=10)
            ends[partition.partition] = high
        consumer.assign(partitions)
        found: list[Delivery] = []
        deadline = time.monotonic() + timeout
        open_partitions = {p.partition for p in partitions if ends[p.partition] > max(p.offset, 0)}
        while open_partitions and len(found) < limit and time.monotonic() < deadline:
            for message in consumer.consume(min(500, limit - len(found)), 0.2):
                if message.error() is not None:
                    continue
                found.append(to_delivery(message))
                letter = found[-1]
                if letter.offset + 1 >= ends[letter.partition]:
                    open_partitions.discard(letter.partition)
        return sorted(found, key=lambda d: (d.timestamp, d.partition, d.offset))

    def browse(self, limit: int, timeout: float) -> list[Delivery]:
        config = client_config(self.topology.kafka, "topo-dlq-browse")
        consumer = Consumer({**config, "group.id": f"topo-dlq-browse-{uuid.uuid4().hex}", "enable.auto.commit": False})
        try:
            partitions = self._partitions(consumer)
            for partition in partitions:
                partition.offset = OFFSET_BEGINNING
            return self._read(consumer, partitions, limit, timeout)
        finally:
            consumer.close()

    def take(self, limit: int, timeout: float) -> list[Delivery]:
        config = client_config(self.topology.kafka, "topo-dlq-replay")
        self.taker = self.taker or Consumer({**config, "group.id": f"{self.group.kafka.group_id}.dlq-replay",
                                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        partitions = self._partitions(self.taker)
        committed = self.taker.committed(partitions, timeout=10)
        for partition in committed:
            if partition.offset < 0:
                partition.offset = OFFSET_BEGINNING
        return self._read(self.taker, committed, limit, timeout)

    def done(self, deliveries: Iterable[Delivery]) -> None:
        if self.taker is None:
            return
        last: dict[int, int] = {}
        for delivery in deliveries:
            last[delivery.partition] = max(last.get(delivery.partition, -1), delivery.offset)
        if last:
            self.taker.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                              asynchronous=False)

    def close(self) -> None:
        if self.taker is not None:
            self.taker.close()
            self.taker = None
