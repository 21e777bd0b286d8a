"""`topo dlq list|replay` on Kafka: reading a group's dead-letter topic.

`browse` reads with a throwaway consumer from the beginning; `take` reads from the offsets the
replay group `<group_id>.dlq-replay` committed, and `done` commits past what was replayed. The
commit's metadata keeps the latest replays of the partition (`[[first, end, replayed_at], ...]`),
so `topo dlq list` can say when each letter was replayed, and which letters beyond the position
a filtered replay re-published already (`topo.runtime.transport.replays`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from topo.core.model import ConsumerGroup, Topology
from topo.runtime.transport.base import DeadLetterReader, Delivery, Replay, ReplayRecord, TransportError
from topo.runtime.transport.kafka.config import client_config, to_delivery
from topo.runtime.transport.replays import covered, record

# Replays remembered per partition: ~50 bytes each, within Kafka's default 4096-byte limit on
# commit metadata (offset.metadata.max.bytes).
REMEMBERED_REPLAYS = 50


def encode_replays(replays: list[Replay]) -> str:
    return json.dumps([[r.first, r.end, r.at] for r in replays[-REMEMBERED_REPLAYS:]], separators=(",", ":"))


def decode_replays(partition: int, metadata: str | None) -> list[Replay]:
    """The replays a commit's metadata holds; none when it holds something else (an older topo)."""
    try:
        entries = json.loads(metadata or "[]")
        return [Replay(partition, int(first), int(end), str(at)) for first, end, at in entries]
    except (ValueError, TypeError):
        return []


class KafkaDeadLetters(DeadLetterReader):
    def __init__(self, topology: Topology, group: ConsumerGroup) -> None:
        self.topology = topology
        self.group = group
        self.topic = group.kafka.dlq_topic
        self.taker: Consumer | None = None
        self._taken_from: dict[int, TopicPartition] = {}  # committed offsets (and metadata) `take` read from
        self._taken: dict[int, list[int]] = {}  # offsets `take` read per partition, ascending

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

    def browse(self, limit: int, timeout: float, *, replayed: bool = True) -> list[Delivery]:
        if not replayed:
            return self.take(limit, timeout)  # from the replay group's offsets; nothing is committed
        config = client_config(self.topology.kafka, "topo-dlq-browse")
        consumer = Consumer({**config, "group.id": f"topo-dlq-browse-{uuid.uuid4().hex}", "enable.auto.commit": False})
        try:
            partitions = self._partitions(consumer)
            for partition in partitions:
                partition.offset = OFFSET_BEGINNING
            return self._read(consumer, partitions, limit, timeout)
        finally:
            consumer.close()

    def _replay_group(self) -> Consumer:
        """A consumer of the replay group, assigned partitions only: it never joins the group."""
        if self.taker is None:
            config = client_config(self.topology.kafka, "topo-dlq-replay")
            self.taker = Consumer({**config, "group.id": f"{self.group.kafka.group_id}.dlq-replay",
                                   "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        return self.taker

    def take(self, limit: int, timeout: float) -> list[Delivery]:
        taker = self._replay_group()
        committed = taker.committed(self._partitions(taker), timeout=10)
        self._taken_from = {p.partition: p for p in committed}
        starts = [TopicPartition(self.topic, p.partition, p.offset if p.offset >= 0 else OFFSET_BEGINNING)
                  for p in committed]
        letters = self._read(taker, starts, limit, timeout)
        self._taken = {}
        for letter in sorted(letters, key=lambda d: d.offset):
            self._taken.setdefault(letter.partition, []).append(letter.offset)
        histories = {p: decode_replays(p, c.metadata) for p, c in self._taken_from.items()}
        # Letters a filtered replay re-published already (beyond the position) are not taken again.
        return [d for d in letters if not covered(d.offset, histories.get(d.partition, ()))]

    def done(self, deliveries: Iterable[Delivery], replayed_at: str = "") -> None:
        if self.taker is None:
            return
        selected: dict[int, set[int]] = {}
        for delivery in deliveries:
            selected.setdefault(delivery.partition, set()).add(delivery.offset)
        offsets = []
        for partition, chosen in sorted(selected.items()):
            taken = self._taken.get(partition, sorted(chosen))
            before = self._taken_from.get(partition)
            start = before.offset if before is not None and before.offset >= 0 else taken[0]
            history = decode_replays(partition, before.metadata if before is not None else None)
            position, replays = record(partition, start, taken, chosen, replayed_at, history)
            offsets.append(TopicPartition(self.topic, partition, position, metadata=encode_replays(replays)))
        if offsets:
            self.taker.commit(offsets=offsets, asynchronous=False)

    def replay_record(self) -> ReplayRecord:
        consumer = self._replay_group()
        positions: dict[int, int] = {}
        replays: list[Replay] = []
        count = 0
        for committed in consumer.committed(self._partitions(consumer), timeout=10):
            if committed.offset < 0:
                continue
            low, _high = consumer.get_watermark_offsets(TopicPartition(self.topic, committed.partition), timeout=10)
            positions[committed.partition] = committed.offset
            count += max(0, committed.offset - low)  # retention may have deleted older ones
            replays += decode_replays(committed.partition, committed.metadata)
        return ReplayRecord(positions, tuple(replays), count)

    def close(self) -> None:
        if self.taker is not None:
            self.taker.close()
            self.taker = None
