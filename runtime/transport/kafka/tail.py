"""`topo tail` on Kafka: partitions assigned directly, without a group's offsets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from topo.core.model import Topology
from topo.runtime.transport.base import Delivery, Tail, TransportError
from topo.runtime.transport.kafka.config import client_config, deliveries_of


class KafkaTail(Tail):
    """Reads topics with a consumer of a unique group id that never commits; `open_tail` returns it
    assigned (at the end offsets resolved now, or at the beginning), so nothing later is missed."""

    def __init__(self, topology: Topology, topics: Sequence[str], from_beginning: bool) -> None:
        config = client_config(topology.kafka, f"topo-tail-{uuid.uuid4().hex[:8]}")
        self.consumer = Consumer({**config, "group.id": f"topo-tail-{uuid.uuid4().hex}", "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        try:
            self._assign(list(topics), OFFSET_BEGINNING if from_beginning else OFFSET_END)
        except (TransportError, KafkaException):
            self.consumer.close()
            raise

    def _assign(self, topics: list[str], start: int) -> None:
        metadata = self.consumer.list_topics(timeout=10)
        partitions = []
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise TransportError(f"kafka: topic {topic} does not exist; run `topo apply`")
            for index in sorted(found.partitions):
                partition = TopicPartition(topic, index, start)
                if start == OFFSET_END:  # resolve now, so "ready" means nothing later is missed
                    partition.offset = self.consumer.get_watermark_offsets(partition, timeout=10)[1]
                partitions.append(partition)
        self.consumer.assign(partitions)

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        return deliveries_of([m for m in self.consumer.consume(max(1, max_messages), timeout) if m.error() is None])

    def close(self) -> None:
        self.consumer.close()
