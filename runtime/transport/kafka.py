"""Kafka transport (confluent-kafka / librdkafka).

Producer: idempotent (`enable.idempotence`, `acks=all`), Java-compatible `murmur2_random`
partitioner, batching for throughput (`linger.ms` 5, large batches), delivery reports through
callbacks served by `poll`/`flush`.

Consumer: cooperative-sticky group membership, manual offset management: an offset is
committable once every offset before it in its partition is settled (`OffsetTracker`), and
positions are committed asynchronously every `COMMIT_INTERVAL` and synchronously on revocation
and close. Retry topics are consumed by the same consumer; a copy that is not yet due pauses its
retry partition and seeks back to itself until `x-topo-retry-due-ms`. Exactly-once groups use a
transactional producer and commit offsets with `send_offsets_to_transaction`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from topo.core import headers as H
from topo.core.interpolate import expand
from topo.core.model import ConsumerGroup, EventTopic, KafkaSettings, Topology
from topo.runtime.transport.base import (
    AssignmentListener,
    ConsumeOptions,
    ConsumerTransport,
    DeadLetterReader,
    Delivery,
    DeliveryCallback,
    DeliveryReport,
    PublisherTransport,
    StreamId,
    Transport,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.offsets import OffsetTracker

log = logging.getLogger("topo.runtime.kafka")

COMMIT_INTERVAL = 0.2  # seconds between asynchronous commits of settled offsets
PRODUCER_TUNING = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",  # what the Java client does: every client maps a key alike
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "batch.size": 1048576,
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 1048576,
}
KeyedHeaders = list[tuple[str, str | bytes | None]]
STREAM_OF = operator.attrgetter("source", "partition")
OFFSET_OF = operator.attrgetter("offset")


def client_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """librdkafka settings for the topology's cluster; `${VAR}` references expanded now."""
    config: dict[str, Any] = {
        "bootstrap.servers": expand(settings.bootstrap_servers),
        "security.protocol": expand(settings.security_protocol) or "PLAINTEXT",
        "client.id": client_id,
    }
    if "SASL" in config["security.protocol"].upper():
        config["sasl.mechanism"] = expand(settings.sasl_mechanism)
        config["sasl.username"] = expand(settings.sasl_username)
        config["sasl.password"] = expand(settings.sasl_password)
    return config


def decode_headers(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {name: value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
            for name, value in pairs}


def encode_headers(headers: Mapping[str, str]) -> KeyedHeaders:
    return [(name, value.encode()) for name, value in headers.items()]


def to_delivery(message: Message) -> Delivery:
    return deliveries_of([message])[0]


def _key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


def _header_texts(raw: Any) -> dict[str, str]:
    return decode_headers(raw) if raw else {}


_DECODE = operator.methodcaller("decode", "utf-8", "replace")
_MILLISECONDS = operator.itemgetter(1)


def deliveries_of(messages: list[Message]) -> list[Delivery]:
    """`to_delivery` for a batch of messages without errors, field by field through `map`: the
    common case (every message keyed, no headers) runs no Python code per message but
    `Delivery.__init__`."""
    count = len(messages)
    topics = list(map(Message.topic, messages))
    keys = list(map(Message.key, messages))
    texts = map(_DECODE, keys) if None not in keys else map(_key_text, keys)
    raw_headers = list(map(Message.headers, messages))
    headers = map(_header_texts, raw_headers) if any(raw_headers) else map(dict, itertools.repeat((), count))
    values = list(map(Message.value, messages))
    if None in values:  # a tombstone: poison for the core, with an empty body
        values = [value or b"" for value in values]
    seconds = map(operator.truediv, map(_MILLISECONDS, map(Message.timestamp, messages)), itertools.repeat(1000.0))
    return list(map(Delivery, topics, map(Message.partition, messages), map(Message.offset, messages), topics,
                    texts, headers, values, seconds))


def report_callback(destination: str, key: str, callback: DeliveryCallback) -> Callable[[Any, Message], None]:
    def report(error: KafkaError | None, message: Message) -> None:
        if error is None:
            callback(DeliveryReport(destination, key, None, message.partition(), message.offset()))
        else:
            callback(DeliveryReport(destination, key, error.str()))

    return report


class KafkaPublisher(PublisherTransport):
    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer({**config, **PRODUCER_TUNING})

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        self.send(topic.topic, key, body, headers, on_delivery)

    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        callback = None if on_delivery is None else report_callback(destination, key or "", on_delivery)
        encoded = None if key is None else key.encode()
        for _ in range(100):
            try:
                self.producer.produce(destination, body, encoded, headers=encode_headers(headers) if headers else None,
                                      on_delivery=callback)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self.producer.poll(0.1)
            except KafkaException as error:
                raise TransportError(f"kafka: cannot produce to {destination}: {error}") from None
        else:
            raise TransportError(f"kafka: local producer queue stayed full for 10s producing to {destination}")
        self.producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        return int(self.producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("kafka: %d messages were not confirmed before close", remaining)


class KafkaConsumer(ConsumerTransport):
    kind = "kafka"

    def __init__(self, topology: Topology, group: ConsumerGroup, options: ConsumeOptions) -> None:
        self.group = group
        self.options = options
        member = options.client_id or uuid.uuid4().hex[:8]
        base = client_config(topology.kafka, f"topo-{group.name}-{member}")
        self.consumer = Consumer({
            **base,
            "group.id": group.kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": options.start,
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            # Bounded prefetch: a slow handler shows as lag, not memory. Once the local queue is
            # over that bound librdkafka waits fetch.queue.backoff.ms (default 1 s) before it
            # fetches again, however fast the queue drains: a stall per refill without this.
            "queued.max.messages.kbytes": 16384,
            "fetch.queue.backoff.ms": 10,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
        })
        producer_config = {**base, **PRODUCER_TUNING, "linger.ms": 1}
        self.transactional = options.exactly_once
        if self.transactional:
            prefix = group.kafka.transactional_id_prefix or group.kafka.group_id
            producer_config["transactional.id"] = f"{prefix}-{member}"
        self.producer = Producer(producer_config)
        if self.transactional:
            self.producer.init_transactions(30)
            self.producer.begin_transaction()
        self.retry_topics = {r.delay_seconds: r.name for r in group.kafka.retry_topics}
        self.retry_names = frozenset(self.retry_topics.values())
        self.topics = sorted({t for s in group.subscriptions for t in s.topics} | set(self.retry_names))
        self.trackers: dict[StreamId, OffsetTracker] = {}
        self.waiting: dict[StreamId, int] = {}  # retry partitions paused until this epoch ms
        self.core_paused: set[StreamId] = set()
        self.failed_copies: list[tuple[str, Delivery, dict[str, str]]] = []
        self.listener: AssignmentListener | None = None
        self.last_commit = time.monotonic()
        self.dirty = False
        self.closing = False

    # -- group membership
    def subscribe(self, listener: AssignmentListener) -> None:
        self.listener = listener
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        streams = [(p.topic, p.partition) for p in partitions]
        for stream in streams:
            self.trackers[stream] = OffsetTracker()
        if self.listener is not None:
            self.listener.on_assigned(streams)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        streams = [(p.topic, p.partition) for p in partitions]
        if self.listener is not None:
            self.listener.on_revoked(streams)  # settles and calls commit()
        self._forget(streams)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        streams = [(p.topic, p.partition) for p in partitions]
        if self.listener is not None:
            self.listener.on_lost(streams)
        self._forget(streams)

    def _forget(self, streams: Iterable[StreamId]) -> None:
        for stream in streams:
            self.trackers.pop(stream, None)
            self.waiting.pop(stream, None)
            self.core_paused.discard(stream)

    def assignment(self) -> list[StreamId]:
        return list(self.trackers)

    # -- fetching
    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        self.producer.poll(0)
        if self.failed_copies:
            copies, self.failed_copies = self.failed_copies, []
            for destination, delivery, headers in copies:
                self._copy(destination, delivery, headers)
        if self.waiting:
            self._resume_due()
        if self.dirty and time.monotonic() - self.last_commit >= COMMIT_INTERVAL:
            self._commit(asynchronous=True)
        if max_messages <= 0 and len(self.core_paused) < len(self.trackers):
            return []  # no room and not paused (yet): fetch nothing, keep the prefetch
        # poll() returns as soon as one message is there (consume() would wait to fill a batch),
        # then consume(..., 0) takes what is already fetched: low latency and batching.
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        messages = [first]
        if max_messages > 1:
            messages += self.consumer.consume(max_messages - 1, 0)
        if any(map(Message.error, messages)):
            for message in messages:
                error = message.error()
                if error is not None:
                    self._report(error)
            messages = [m for m in messages if m.error() is None]
        deliveries = deliveries_of(messages)
        if self.retry_names:
            deliveries = self._due_only(deliveries)
        return self._track(deliveries)

    def _due_only(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Retry copies not due yet stay in the log: their partition is paused and seeks back to
        the first of them, resuming when it is due (see `_resume_due`)."""
        retry_names = self.retry_names
        if not any(d.source in retry_names for d in deliveries):
            return deliveries
        kept: list[Delivery] = []
        skipped: set[StreamId] = set()
        now_ms = time.time() * 1000
        for delivery in deliveries:
            stream = (delivery.source, delivery.partition)
            if stream in skipped:
                continue
            if delivery.source in retry_names:
                due = int(delivery.headers.get(H.RETRY_DUE_MS, "0") or 0)
                if due > now_ms:
                    self._wait_until(stream, delivery.offset, due)
                    skipped.add(stream)
                    continue
            kept.append(delivery)
        return kept

    def _track(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Record the offsets handed out, per partition; drop deliveries of partitions revoked
        meanwhile."""
        trackers = self.trackers
        runs = [(stream, list(run)) for stream, run in itertools.groupby(deliveries, STREAM_OF)]
        if len(runs) == 1:  # one partition's run (common): no copy
            tracker = trackers.get(runs[0][0])
            if tracker is None:
                return []
            tracker.add_many(list(map(OFFSET_OF, deliveries)))
            return deliveries
        tracked: list[Delivery] = []
        for stream, run in runs:
            tracker = trackers.get(stream)
            if tracker is not None:
                tracker.add_many(list(map(OFFSET_OF, run)))
                tracked += run
        return tracked

    def _report(self, error: KafkaError) -> None:
        if error.code() != KafkaError._PARTITION_EOF:
            if error.fatal():
                raise TransportError(f"kafka consumer of group {self.group.name}: {error.str()}")
            log.warning("kafka consumer of group %s: %s", self.group.name, error.str())

    def _wait_until(self, stream: StreamId, offset: int, due_ms: int) -> None:
        partition = TopicPartition(stream[0], stream[1], offset)
        self.consumer.pause([partition])
        self.consumer.seek(partition)
        self.waiting[stream] = due_ms

    def _resume_due(self) -> None:
        now = time.time() * 1000
        due = [s for s, at in self.waiting.items() if at <= now]
        for stream in due:
            del self.waiting[stream]
        ready = [TopicPartition(t, p) for t, p in due if (t, p) not in self.core_paused and (t, p) in self.trackers]
        if ready:
            self.consumer.resume(ready)

    # -- settling
    def ack(self, deliveries: Iterable[Delivery]) -> None:
        trackers = self.trackers
        for stream, run in itertools.groupby(deliveries, STREAM_OF):  # acks come in runs per partition
            tracker = trackers.get(stream)
            if tracker is not None:
                tracker.done_many(list(map(OFFSET_OF, run)))
        self.dirty = True

    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        destination = self.retry_topics.get(delay_seconds)
        if destination is None:
            raise Unsupported(f"group {self.group.name} has no retry topic for {delay_seconds}s "
                              f"(retry topics: {sorted(self.retry_topics)})")
        self._copy(destination, delivery, dict(headers))

    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        self._copy(self.group.kafka.dlq_topic, delivery, dict(headers))

    def _copy(self, destination: str, delivery: Delivery, headers: dict[str, str]) -> None:
        merged = {**delivery.headers, **headers}

        def confirmed(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.ack((delivery,))
            else:
                log.error("kafka: copy of %s[%d]@%d to %s failed (%s); trying again", delivery.source,
                          delivery.partition, delivery.offset, destination, error.str())
                self.failed_copies.append((destination, delivery, headers))

        key = None if delivery.key is None else delivery.key.encode()
        while True:
            try:
                self.producer.produce(destination, delivery.body, key, headers=encode_headers(merged),
                                      on_delivery=confirmed)
                return
            except BufferError:
                self.producer.poll(0.1)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        lowest: dict[StreamId, int] = {}
        for delivery in deliveries:
            stream = (delivery.source, delivery.partition)
            lowest[stream] = min(lowest.get(stream, delivery.offset), delivery.offset)
        for stream, offset in lowest.items():
            tracker = self.trackers.get(stream)
            if tracker is None or self.closing:
                continue
            tracker.forget_from(offset)
            try:
                self.consumer.seek(TopicPartition(stream[0], stream[1], offset))
            except KafkaException as error:  # e.g. the partition is being revoked: nothing to redo
                log.info("kafka: not seeking %s[%d] back to %d: %s", stream[0], stream[1], offset, error)

    # -- flow control
    def pause(self, streams: Iterable[StreamId]) -> None:
        fresh = [s for s in streams if s not in self.core_paused]
        self.core_paused.update(fresh)
        partitions = [TopicPartition(t, p) for t, p in fresh if (t, p) in self.trackers]
        if partitions:
            self.consumer.pause(partitions)

    def resume(self, streams: Iterable[StreamId]) -> None:
        back = [s for s in streams if s in self.core_paused]
        self.core_paused.difference_update(back)
        partitions = [TopicPartition(t, p) for t, p in back if (t, p) not in self.waiting and (t, p) in self.trackers]
        if partitions:
            self.consumer.resume(partitions)

    # -- committing
    def commit(self) -> None:
        remaining = self.producer.flush(30)  # copies confirmed -> their originals are acked
        if remaining:
            log.error("kafka: %d retry/dead-letter copies unconfirmed at commit; their originals stay uncommitted",
                      remaining)
        self._commit(asynchronous=False)

    def _commit(self, asynchronous: bool) -> None:
        offsets = []
        for (topic, partition), tracker in self.trackers.items():
            if tracker.committable is not None and tracker.committable != tracker.committed:
                offsets.append(TopicPartition(topic, partition, tracker.committable))
                tracker.committed = tracker.committable
        self.last_commit = time.monotonic()
        self.dirty = False
        if not offsets:
            if self.transactional and not asynchronous:
                self._commit_transaction([])
            return
        if self.transactional:
            self._commit_transaction(offsets)
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            log.warning("kafka: commit for group %s failed: %s", self.group.name, error)

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as error:
            # Offsets and copies of this transaction are rolled back together; the events are
            # redelivered after a restart, so stop rather than continue past them.
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(30)
            raise TransportError(f"kafka: transaction of group {self.group.name} failed: {error}") from None
        if not self.closing:
            self.producer.begin_transaction()

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic.topic, body, key.encode(), headers=encode_headers(headers or {}))
                return
            except BufferError:
                self.producer.poll(0.1)

    def close(self) -> None:
        try:
            self.commit()
            self.closing = True
            if self.transactional:
                self._commit_transaction([])
        finally:
            self.closing = True
            self.listener = None  # revocation during close needs no settling: all is committed
            self.consumer.close()
            self.producer.flush(10)


class KafkaTail(ConsumerTransport):
    """Reads topics without a group's offsets: partitions assigned directly, nothing committed."""

    kind = "kafka"

    def __init__(self, topology: Topology, topics: Sequence[str], from_beginning: bool) -> None:
        config = client_config(topology.kafka, f"topo-tail-{uuid.uuid4().hex[:8]}")
        self.consumer = Consumer({**config, "group.id": f"topo-tail-{uuid.uuid4().hex}", "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        self.topics = list(topics)
        self.start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self.streams: list[StreamId] = []

    def subscribe(self, listener: AssignmentListener) -> None:
        metadata = self.consumer.list_topics(timeout=10)
        partitions = []
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise TransportError(f"kafka: topic {topic} does not exist; run `topo apply`")
            for index in sorted(found.partitions):
                partition = TopicPartition(topic, index, self.start)
                if self.start == OFFSET_END:  # resolve now, so "ready" means nothing later is missed
                    partition.offset = self.consumer.get_watermark_offsets(partition, timeout=10)[1]
                partitions.append(partition)
        self.consumer.assign(partitions)
        self.streams = [(p.topic, p.partition) for p in partitions]
        listener.on_assigned(self.streams)

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        return deliveries_of([m for m in self.consumer.consume(max(1, max_messages), timeout) if m.error() is None])

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Nothing to record: a tail keeps no position."""

    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        raise Unsupported("a tail does not retry")

    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        raise Unsupported("a tail does not dead-letter")

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Nothing to give back: a tail keeps no position."""

    def pause(self, streams: Iterable[StreamId]) -> None:
        self.consumer.pause([TopicPartition(t, p) for t, p in streams])

    def resume(self, streams: Iterable[StreamId]) -> None:
        self.consumer.resume([TopicPartition(t, p) for t, p in streams])

    def assignment(self) -> list[StreamId]:
        return list(self.streams)

    def commit(self) -> None:
        """Nothing to commit."""

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        raise Unsupported("a tail does not publish")

    def close(self) -> None:
        self.consumer.close()


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

    def open_dead_letters(self, group: ConsumerGroup) -> KafkaDeadLetters:
        return KafkaDeadLetters(self.topology, group)
