"""In-memory transport: a testing aid for users' handlers, not a broker.

It behaves like a one-process Kafka: each event topic has the topology's partitions (a key maps
to a partition by CRC-32, so per-key order holds), a group commits the contiguous settled prefix
of each partition, and retry copies go to the group's retry topics and come back once their
`x-topo-retry-due-ms` has passed; dead letters go to the group's dead-letter topic. So the core
runs exactly the same retry, dead-letter, dedup and ordering logic as on a real broker.

Delays are real time. To make tests fast, construct the runner with `time_scale` (e.g. 0.01: a
1 s retry waits 10 ms); the core applies it to in-place retries and to the due time it writes on
retry copies, which is all this transport looks at. One consumer per group at a time; closing it
and opening another one resumes from the committed positions, like a restart.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from topo.core import headers as H
from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.transport.base import (
    AssignmentListener,
    ConsumeOptions,
    ConsumerTransport,
    DeadLetterReader,
    Delivery,
    DeliveryCallback,
    DeliveryReport,
    PublisherTransport,
    Replay,
    ReplayRecord,
    StreamId,
    Tail,
    Transport,
    TransportError,
    Unsupported,
    replay_topic,
)
from topo.runtime.transport.offsets import OffsetTracker
from topo.runtime.transport.replays import covered, record


@dataclass(frozen=True, slots=True)
class Record:
    key: str | None
    headers: dict[str, str]
    body: bytes
    timestamp: float


@dataclass
class MemoryBroker:
    """The shared state: topic logs and committed positions."""

    logs: dict[str, list[list[Record]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group id, topic, partition)
    replays: dict[str, list[Replay]] = field(default_factory=dict)  # dead-letter topic -> `topo dlq replay`s
    members: set[str] = field(default_factory=set)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def ensure(self, topic: str, partitions: int) -> None:
        with self.changed:
            self.logs.setdefault(topic, [[] for _ in range(partitions)])

    def append(self, topic: str, key: str | None, body: bytes, headers: Mapping[str, str]) -> tuple[int, int]:
        with self.changed:
            partitions = self.logs.get(topic)
            if partitions is None:
                raise TransportError(f"memory: topic {topic!r} does not exist in this topology")
            index = 0 if key is None else zlib.crc32(key.encode()) % len(partitions)
            partitions[index].append(Record(key, dict(headers), body, time.time()))
            self.changed.notify_all()
            return index, len(partitions[index]) - 1

    def records(self, topic: str, partition: int) -> list[Record]:
        return self.logs[topic][partition]


def _delivery(topic: str, partition: int, offset: int, record: Record) -> Delivery:
    return Delivery(source=topic, partition=partition, offset=offset, topic=topic, key=record.key,
                    headers=dict(record.headers), body=record.body, timestamp=record.timestamp)


class MemoryPublisher(PublisherTransport):
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        self.send(topic.topic, key, body, headers, on_delivery)

    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        partition, offset = self.broker.append(destination, key, body, headers or {})
        if on_delivery is not None:
            on_delivery(DeliveryReport(destination, key or "", None, partition, offset))

    def redeliver(self, group: ConsumerGroup, original: str, key: str | None, body: bytes,
                  headers: Mapping[str, str], on_delivery: DeliveryCallback | None = None) -> None:
        self.send(replay_topic(group), key, body, {**headers, H.ORIGINAL_TOPIC: original}, on_delivery)

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float = 10.0) -> None:
        """Nothing buffered."""


class MemoryConsumer(ConsumerTransport):
    kind = "memory"

    def __init__(self, broker: MemoryBroker, group_id: str, topics: Sequence[str], retry: Mapping[float, str],
                 dlq: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self.topics = list(topics)
        self.retry = dict(retry)
        self.retry_names = frozenset(retry.values())
        self.dlq = dlq
        self.positions: dict[StreamId, int] = {}
        self.trackers: dict[StreamId, OffsetTracker] = {}
        self.paused: set[StreamId] = set()
        self.listener: AssignmentListener | None = None
        self._wake = False

    def subscribe(self, listener: AssignmentListener) -> None:
        self.listener = listener
        streams: list[StreamId] = []
        for topic in self.topics:
            for partition in range(len(self.broker.logs[topic])):
                stream = (topic, partition)
                self.positions[stream] = self.broker.committed.get((self.group_id, topic, partition), 0)
                self.trackers[stream] = OffsetTracker()
                streams.append(stream)
        listener.on_assigned(streams)

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        broker = self.broker
        with broker.changed:
            while True:
                found = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or self._wake:
                    self._wake = False
                    return found
                broker.changed.wait(min(remaining, 0.01))

    def _take(self, limit: int) -> list[Delivery]:
        found: list[Delivery] = []
        now_ms = time.time() * 1000
        for stream, position in self.positions.items():
            if len(found) >= limit:
                break
            if stream in self.paused:
                continue
            topic, partition = stream
            log = self.broker.records(topic, partition)
            while position < len(log) and len(found) < limit:
                record = log[position]
                if topic in self.retry_names and int(record.headers.get(H.RETRY_DUE_MS, "0") or 0) > now_ms:
                    break  # not due: this retry partition waits, others flow
                found.append(_delivery(topic, partition, position, record))
                self.trackers[stream].add(position)
                position += 1
            self.positions[stream] = position
        return found

    def wakeup(self) -> None:
        with self.broker.changed:
            self._wake = True
            self.broker.changed.notify_all()

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            tracker = self.trackers.get((delivery.source, delivery.partition))
            if tracker is not None:
                tracker.done(delivery.offset)
        self.commit()

    def _copy(self, destination: str, delivery: Delivery, headers: Mapping[str, str]) -> None:
        self.broker.append(destination, delivery.key, delivery.body, {**delivery.headers, **headers})
        self.ack((delivery,))

    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        destination = self.retry.get(delay_seconds)
        if destination is None:
            raise Unsupported(f"memory: no retry topic for {delay_seconds}s in group {self.group_id}")
        self._copy(destination, delivery, headers)

    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        self._copy(self.dlq, delivery, headers)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            stream = (delivery.source, delivery.partition)
            if stream in self.positions and delivery.offset < self.positions[stream]:
                self.positions[stream] = delivery.offset
                self.trackers[stream].forget_from(delivery.offset)

    def pause(self, streams: Iterable[StreamId]) -> None:
        self.paused.update(streams)

    def resume(self, streams: Iterable[StreamId]) -> None:
        self.paused.difference_update(streams)

    def assignment(self) -> list[StreamId]:
        return list(self.positions)

    def commit(self) -> None:
        for (topic, partition), tracker in self.trackers.items():
            if tracker.committable is not None:
                self.broker.committed[(self.group_id, topic, partition)] = tracker.committable

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.broker.append(topic.topic, key, body, headers or {})

    def close(self) -> None:
        self.commit()
        self.broker.members.discard(self.group_id)


class MemoryTail(Tail):
    """Reads topic logs from their end (or beginning); keeps no position in the broker."""

    def __init__(self, broker: MemoryBroker, topics: Sequence[str], from_beginning: bool) -> None:
        self.broker = broker
        with broker.changed:
            self.positions: dict[StreamId, int] = {
                (topic, partition): 0 if from_beginning else len(log)
                for topic in topics for partition, log in enumerate(broker.logs[topic])}

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self.broker.changed:
            while True:
                found = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self.broker.changed.wait(remaining)  # every append notifies

    def _take(self, limit: int) -> list[Delivery]:
        found: list[Delivery] = []
        for (topic, partition), position in self.positions.items():
            log = self.broker.records(topic, partition)
            end = min(len(log), position + limit - len(found))
            found += [_delivery(topic, partition, offset, log[offset]) for offset in range(position, end)]
            self.positions[(topic, partition)] = end
        return found

    def close(self) -> None:
        self.positions.clear()


class MemoryDeadLetters(DeadLetterReader):
    def __init__(self, broker: MemoryBroker, group: ConsumerGroup) -> None:
        self.broker = broker
        self.topic = group.kafka.dlq_topic
        self.replay_id = f"{group.kafka.group_id}.dlq-replay"
        self._taken: list[int] = []

    def _read(self, start: int, limit: int) -> list[Delivery]:
        records = self.broker.records(self.topic, 0)
        return [_delivery(self.topic, 0, offset, records[offset])
                for offset in range(start, min(len(records), start + limit))]

    def browse(self, limit: int, timeout: float, *, replayed: bool = True) -> list[Delivery]:
        return self._read(0 if replayed else self._replayed_until(), limit)

    def _replayed_until(self) -> int:
        return self.broker.committed.get((self.replay_id, self.topic, 0), 0)

    def take(self, limit: int, timeout: float) -> list[Delivery]:
        letters = self._read(self._replayed_until(), limit)
        self._taken = [d.offset for d in letters]
        history = self.broker.replays.get(self.topic, [])
        return [d for d in letters if not covered(d.offset, history)]

    def done(self, deliveries: Iterable[Delivery], replayed_at: str = "") -> None:
        chosen = {d.offset for d in deliveries}
        if chosen:
            key = (self.replay_id, self.topic, 0)
            taken = self._taken or sorted(chosen)
            position, replays = record(0, self._replayed_until(), taken, chosen, replayed_at,
                                       self.broker.replays.get(self.topic, []))
            self.broker.committed[key] = position
            self.broker.replays[self.topic] = replays

    def replay_record(self) -> ReplayRecord:
        until = self._replayed_until()
        return ReplayRecord({0: until} if until else {}, tuple(self.broker.replays.get(self.topic, ())), until)

    def close(self) -> None:
        """Nothing to release."""


class MemoryTransport(Transport):
    """All topics of the topology (event topics, every group's retry and dead-letter topics) in
    this process. Share one instance between the publisher and the groups of a test."""

    kind = "memory"

    def __init__(self, topology: Topology, broker: MemoryBroker | None = None) -> None:
        super().__init__(topology)
        self.broker = broker or MemoryBroker()
        for event in topology.events:
            for topic in event.topics:
                self.broker.ensure(topic.topic, max(1, event.kafka.partitions))
        for group in topology.groups:
            for retry in group.kafka.retry_topics:
                self.broker.ensure(retry.name, 1)
            self.broker.ensure(group.kafka.dlq_topic, 1)

    def open_publisher(self, producer_name: str = "") -> MemoryPublisher:
        return MemoryPublisher(self.broker)

    def open_consumer(self, group: ConsumerGroup, options: ConsumeOptions) -> MemoryConsumer:
        if options.exactly_once:
            raise Unsupported("memory: exactly-once needs Kafka transactions")
        if group.kafka.group_id in self.broker.members:
            raise TransportError(f"memory: group {group.name} already has a consumer; close it first")
        self.broker.members.add(group.kafka.group_id)
        topics = sorted({t for s in group.subscriptions for t in s.topics})
        retry = {r.delay_seconds: r.name for r in group.kafka.retry_topics}
        return MemoryConsumer(self.broker, group.kafka.group_id, [*topics, *sorted(retry.values())], retry,
                              group.kafka.dlq_topic)

    def open_tail(self, topics: Sequence[EventTopic], from_beginning: bool = False) -> MemoryTail:
        return MemoryTail(self.broker, [t.topic for t in topics], from_beginning)

    def open_dead_letters(self, group: ConsumerGroup) -> MemoryDeadLetters:
        return MemoryDeadLetters(self.broker, group)

    def dead_letters(self, group: ConsumerGroup) -> list[Delivery]:
        """Every dead letter of `group` so far (test convenience)."""
        return self.open_dead_letters(group).browse(1 << 30, 0)
