"""A member of a consumer group on Kafka.

Cooperative-sticky group membership, manual offset management: an offset is committable once
every offset before it in its partition is settled (`OffsetTracker`), and positions are committed
asynchronously every `COMMIT_INTERVAL` and synchronously on revocation and close. Retry topics
are consumed by the same consumer; a copy that is not yet due pauses its retry partition and
seeks back to itself until `x-topo-retry-due-ms`. Exactly-once groups use a transactional
producer: retry and dead-letter copies and the events handlers derive from a delivery join the
transaction that commits its offset (`topo.runtime.transport.kafka.transaction`).
"""

from __future__ import annotations

import itertools
import logging
import operator
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from topo.core import headers as H
from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.transport.base import (
    AssignmentListener,
    ConsumeOptions,
    ConsumerTransport,
    Delivery,
    DerivedEvent,
    StreamId,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.kafka.config import (
    KAFKA_CLIENT_LOG,
    PRODUCER_TUNING,
    client_config,
    deliveries_of,
    encode_headers,
)
from topo.runtime.transport.kafka.probe import kafka_unreachable
from topo.runtime.transport.kafka.transaction import DeliveryHook, Outgoing, Transactions, derived_message, report_to
from topo.runtime.transport.offsets import OffsetTracker

log = logging.getLogger("topo.runtime.kafka")

RECONNECT_CHECK = 2.0  # seconds between metadata requests while the broker is unreachable
COMMIT_INTERVAL = 0.2  # seconds between asynchronous commits of settled offsets
TRANSACTION_TIMEOUT_MS = 10_000
STREAM_OF = operator.attrgetter("source", "partition")
OFFSET_OF = operator.attrgetter("offset")


class KafkaConsumer(ConsumerTransport):
    kind = "kafka"

    def __init__(self, topology: Topology, group: ConsumerGroup, options: ConsumeOptions) -> None:
        self.group = group
        self.options = options
        self.settings = topology.kafka
        self.last_reconnect_check = 0.0
        member = options.client_id or uuid.uuid4().hex[:8]
        base = client_config(topology.kafka, f"topo-{group.name}-{member}")
        self.servers = str(base["bootstrap.servers"])
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
            "error_cb": self._on_client_error,
        })
        producer_config = {**base, **PRODUCER_TUNING, "linger.ms": 1}
        self.transactional = options.exactly_once
        if self.transactional:
            prefix = group.kafka.transactional_id_prefix or group.kafka.group_id
            # Unique per live process (pods of one Deployment all run `topo` as pid 1: the host name,
            # i.e. the pod's, tells them apart) and the same after a restart in place, whose
            # init_transactions then aborts the open transaction of the process it replaces at once.
            producer_config["transactional.id"] = f"{prefix}-{socket.gethostname()}-{member}"
            # What a crashed process's open transaction blocks read_committed readers for at most
            # (Kafka Streams' exactly-once default); transactions here commit every COMMIT_INTERVAL.
            producer_config["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        self.producer = Producer(producer_config)
        self.transactions = (Transactions(self.producer, self.consumer, group.name, self._send)
                             if self.transactional else None)
        self.retry_topics = {r.delay_seconds: r.name for r in group.kafka.retry_topics}
        self.retry_names = frozenset(self.retry_topics.values())
        self.topics = sorted({t for s in group.subscriptions for t in s.topics} | set(self.retry_names))
        self.trackers: dict[StreamId, OffsetTracker] = {}
        self.waiting: dict[StreamId, int] = {}  # retry partitions paused until this epoch ms
        self.core_paused: set[StreamId] = set()
        self.failed_sends: list[Callable[[], None]] = []  # copies and derived events to produce again
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
        if self.transactions is not None and not self.transactions.aborted:
            # Another member owns these partitions now, and handles again what this one did not
            # commit yet (its dedup store knows nothing of that): stop, and start afresh.
            self.transactions.abort_for_good()
            raise TransportError(f"kafka: group {self.group.name} was fenced: its {len(streams)} partitions went "
                                 "to another member (session timed out); its open transaction is aborted and it "
                                 "stops, so that a restart resumes from the committed offsets")

    def _forget(self, streams: Iterable[StreamId]) -> None:
        for stream in streams:
            self.trackers.pop(stream, None)
            if self.transactions is not None:
                self.transactions.forget(stream)
            self.waiting.pop(stream, None)
            self.core_paused.discard(stream)

    def assignment(self) -> list[StreamId]:
        return list(self.trackers)

    # -- connection state (librdkafka reconnects by itself; the runner reports the changes)
    def _on_client_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.connected = False
            self.disconnect_reason = kafka_unreachable(self.settings, self.servers, error.str()).args[0]
        else:  # through the client logger: deduplicated; a dropped connection is the line above's business
            level = logging.INFO if error.code() == KafkaError._TRANSPORT else logging.WARNING
            KAFKA_CLIENT_LOG.logger.log(level, "group %s: %s", self.group.name, error.str())

    def _check_reconnected(self) -> None:
        """While disconnected, ask for metadata every RECONNECT_CHECK seconds (briefly)."""
        now = time.monotonic()
        if now - self.last_reconnect_check < RECONNECT_CHECK:
            return
        self.last_reconnect_check = now
        try:
            self.consumer.list_topics(timeout=0.5)
        except KafkaException:
            return
        self.connected = True

    # -- fetching
    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        if not self.connected:
            self._check_reconnected()
        self.producer.poll(0)
        if self.failed_sends:
            sends, self.failed_sends = self.failed_sends, []
            for send in sends:
                send()
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
        if self.transactions is not None:  # committed with the original's offset
            self._hold(delivery, [Outgoing(destination, delivery.key, delivery.body, merged)])
            return

        def confirmed(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.ack((delivery,))
            else:
                log.error("kafka: copy of %s[%d]@%d to %s failed (%s); trying again", delivery.source,
                          delivery.partition, delivery.offset, destination, error.str())
                self.failed_sends.append(lambda: self._copy(destination, delivery, headers))

        self._produce(destination, delivery.key, delivery.body, merged, confirmed)

    def _send(self, message: Outgoing) -> None:
        self._produce(message.topic, message.key, message.body, message.headers, message.report)

    def _hold(self, delivery: Delivery, messages: list[Outgoing]) -> None:
        """Exactly-once: `messages` wait for the transaction that commits an offset past
        `delivery`, which counts as settled now (`Transactions`)."""
        assert self.transactions is not None
        tracker = self.trackers.get(delivery.stream)
        if tracker is not None and (tracker.committed is None or delivery.offset >= tracker.committed):
            self.transactions.hold(delivery.stream, delivery.offset, messages)
        self.ack((delivery,))

    def _produce(self, topic: str, key: str | None, body: bytes, headers: Mapping[str, str] | None,
                 on_delivery: DeliveryHook | None) -> None:
        encoded = None if key is None else key.encode()
        while True:
            try:
                self.producer.produce(topic, body, encoded, headers=encode_headers(headers) if headers else None,
                                      on_delivery=on_delivery)
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                self.producer.poll(0.1)

    def publish_and_ack(self, delivery: Delivery, events: Sequence[DerivedEvent]) -> None:
        """Exactly-once: held until the transaction that commits an offset past `delivery`.
        Otherwise produced now, and `delivery` acked once every event is confirmed."""
        if self.transactions is not None:
            self._hold(delivery, [derived_message(event) for event in events])
            return
        unconfirmed = set(range(len(events)))
        for index, event in enumerate(events):
            self._derive(delivery, event, index, unconfirmed)

    def _derive(self, delivery: Delivery, event: DerivedEvent, index: int, unconfirmed: set[int]) -> None:
        told = report_to(event)

        def confirmed(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                log.error("kafka: event derived from %s[%d]@%d for %s failed (%s); trying again", delivery.source,
                          delivery.partition, delivery.offset, event.topic.topic, error.str())
                self.failed_sends.append(lambda: self._derive(delivery, event, index, unconfirmed))
                return
            if told is not None:
                told(error, message)
            unconfirmed.discard(index)
            if not unconfirmed:
                self.ack((delivery,))

        self._produce(event.topic.topic, event.key, event.body, event.headers, confirmed)

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
            if self.transactions is not None:
                self.transactions.drop_from(stream, offset)
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
        previous: dict[StreamId, int | None] = {}
        for stream, tracker in self.trackers.items():
            if tracker.committable is not None and tracker.committable != tracker.committed:
                offsets.append(TopicPartition(stream[0], stream[1], tracker.committable))
                previous[stream] = tracker.committed
                tracker.committed = tracker.committable
        self.last_commit = time.monotonic()
        self.dirty = False
        if self.transactions is not None:
            if (offsets or not asynchronous) and not self.transactions.commit(offsets, begin_next=not self.closing):
                for stream, committed in previous.items():  # refused: the next attempt commits them
                    if stream in self.trackers:
                        self.trackers[stream].committed = committed
                self.dirty = True
            return
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            log.warning("kafka: commit for group %s failed: %s", self.group.name, error)

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self._produce(topic.topic, key, body, headers, None)

    def close(self) -> None:
        try:
            if self.transactions is not None and self.transactions.aborted:
                return  # nothing may be committed any more: a restart resumes from the committed offsets
            self.closing = True
            self.commit()
        finally:
            self.closing = True
            self.listener = None  # revocation during close needs no settling: all is committed
            self.consumer.close()
            self.producer.flush(10)

