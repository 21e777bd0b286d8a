"""The broker-neutral transport interface: everything the runtime core needs from a broker.

A transport moves opaque bytes. It knows nothing of event classes, handlers, deduplication,
ordering or retry policy: the core (`topo.runtime.runner`, `topo.runtime.publisher`) decides
all of that and calls the narrow methods below. Implementations: `kafka.KafkaTransport`
(confluent-kafka), `rabbitmq.RabbitMQTransport` (pika), `memory.MemoryTransport` (tests).
A `Tail` (`topo tail`) only reads: it has an interface of its own, not the group consumer's.
See docs/runtime-transport.md for the contract in prose.

Threading model (the part that matters for pika):

* `PublisherTransport`: the core serialises calls (one thread at a time, under a lock), so an
  implementation need not be thread-safe. Delivery reports (`on_delivery`) are invoked from
  inside `publish`, `poll` or `flush`, on the calling thread, never from a thread of their own.
* `ConsumerTransport`: every method is called from ONE thread, the consume-loop thread, the
  same thread that opened it; the exceptions are `wakeup()` and the optional `publish()`,
  callable from any thread.
  Handlers run on worker threads that never touch the transport. The loop thread calls
  `poll()` at least every `POLL_INTERVAL_MAX` seconds even while handlers run, so a transport
  that needs to service its connection (pika heartbeats, Kafka's max.poll.interval.ms) does it
  inside `poll()`. Assignment callbacks are invoked from inside `poll()`, on the loop thread.

Identity of a consumed message: a `StreamId` (`source`, `partition`) names the unit of
ordering and of flow control: a Kafka (topic, partition), or a RabbitMQ (queue, index of the
queue in `group.rabbitmq.queues`). `Delivery.offset` is the Kafka offset or the AMQP delivery
tag; it is only meaningful to the transport that produced it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from topo.core import headers as H
from topo.core.model import ConsumerGroup, EventTopic, Topology

# The loop thread calls ConsumerTransport.poll() at least this often (seconds).
POLL_INTERVAL_MAX = 0.1

Headers = dict[str, str]
StreamId = tuple[str, int]  # (Kafka topic or RabbitMQ queue, partition or queue index)


class TransportError(Exception):
    """A broker operation failed; the message says which broker, which object and why."""


class BrokerUnreachable(TransportError):
    """No connection to the broker within the bounded wait: the message names the address (never
    a password) and the setting that holds it."""


class BrokerRefused(TransportError):
    """The broker answered but refused this client: wrong credentials or a certificate the client
    does not trust. Retrying does not help; the message names the setting to fix."""


class NotProvisioned(TransportError):
    """A topic, exchange or queue of the topology does not exist: the topology is not applied."""

    def __init__(self, broker: str, missing: str, topology: str) -> None:
        self.broker = broker
        self.missing = missing
        self.topology = topology
        super().__init__(self.explain("FILE"))

    def explain(self, topology_file: str) -> str:
        """The one-line error, with the fix naming `topology_file`."""
        return (f"{self.broker}: {self.missing} does not exist (topology {self.topology} is not applied yet); "
                f"run `topo apply -t {topology_file} --broker {self.broker}`")


class Unsupported(TransportError):
    """The transport refuses a feature (e.g. exactly-once on RabbitMQ)."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Outcome of one publish, passed to the publisher's `on_delivery` callback exactly once.

    `error` is None when the broker durably accepted the message (Kafka: acked by all in-sync
    replicas; RabbitMQ: publisher confirm `ack` and not returned as unroutable). Otherwise it is
    a human-readable reason, e.g. "unroutable: no queue bound for routing key block.new.1"
    (RabbitMQ mandatory return), "nack from broker", or the Kafka error string.
    """

    destination: str  # Kafka topic or RabbitMQ routing key
    key: str
    error: str | None
    partition: int | None = None  # Kafka partition written, when known
    offset: int | None = None  # Kafka offset written, when known


DeliveryCallback = Callable[[DeliveryReport], None]


@dataclass(frozen=True, slots=True)
class DerivedEvent:
    """An event a handler published (`context.publish`) while handling a delivery: sent by
    `ConsumerTransport.publish_and_ack` together with the settling of that delivery."""

    topic: EventTopic
    key: str
    body: bytes  # the envelope JSON
    headers: Mapping[str, str] | None = None
    on_delivery: DeliveryCallback | None = None  # called on the loop thread once the broker answered


@dataclass(slots=True)
class Delivery:
    """One message handed from the transport to the core.

    The transport fills every field from the broker; it never parses `body`. The core owns the
    object until it calls exactly one settling method for it (`ack`, `retry_later`,
    `dead_letter`, `release`); after that the transport may forget it.
    """

    source: str  # where it was read: Kafka topic (possibly a retry topic) or RabbitMQ queue
    partition: int  # Kafka partition; RabbitMQ: index of `source` in group.rabbitmq.queues
    offset: int  # Kafka offset; RabbitMQ delivery tag
    topic: str  # Kafka topic / RabbitMQ routing key the message carried (see ORIGINAL_TOPIC)
    key: str | None  # Kafka message key, or the x-topo-key header on RabbitMQ, decoded UTF-8
    headers: Headers  # all string headers (x-topo-* included), decoded UTF-8
    body: bytes  # the envelope JSON exactly as published
    timestamp: float  # broker timestamp (seconds since the epoch), 0.0 when unknown
    redelivered: bool = False  # the broker says it may have been delivered before
    handle: object = field(default=None, repr=False)  # transport-private (e.g. pika method frame)

    @property
    def stream(self) -> StreamId:
        return (self.source, self.partition)


class AssignmentListener(Protocol):
    """Told which streams this consumer owns. Both methods run on the loop thread, from inside
    `ConsumerTransport.poll()`.

    `on_revoked` is called BEFORE the streams are given away (Kafka: in the rebalance callback,
    before the cooperative revocation completes; RabbitMQ: before the channel of a handed-over
    queue closes, once the core has settled everything of that queue and the consumer is cancelled).
    The core finishes or abandons the in-flight work of those streams and calls `ack` for the
    finished ones before returning; the transport then commits synchronously (Kafka) before it
    lets the revocation proceed. `on_lost` is the same, for streams already taken away (Kafka
    partition lost after a session timeout): nothing can be committed any more.
    """

    def on_assigned(self, streams: Sequence[StreamId]) -> None: ...

    def on_revoked(self, streams: Sequence[StreamId]) -> None: ...

    def on_lost(self, streams: Sequence[StreamId]) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    """How the core wants a group consumed."""

    # Upper bound of deliveries fetched and not yet settled (RabbitMQ: basic_qos prefetch;
    # Kafka: the core pauses streams at this many in flight).
    max_in_flight: int
    # Kafka exactly-once (group.delivery == exactly_once): transactional producer for retry and
    # dead-letter copies and for events handlers publish through `ConsumerTransport.publish`,
    # offsets committed with send_offsets_to_transaction, isolation.level=read_committed.
    # Transports without transactions raise Unsupported from `open_consumer`.
    exactly_once: bool = False
    # Where to start when the group has no committed position: "earliest" or "latest".
    start: str = "earliest"
    # Optional client id suffix (e.g. the process id) for broker-side diagnostics.
    client_id: str = ""


def replay_topic(group: ConsumerGroup) -> str:
    """The Kafka topic that re-delivers to `group` alone: its first retry topic (the group's
    consumers read it; no other group does)."""
    if not group.kafka.retry_topics:
        raise Unsupported(f"group {group.name} has no retry topic on Kafka (every subscription is ordered), "
                          "so nothing re-delivers to it alone; replay to every subscribed group with --all-groups")
    return group.kafka.retry_topics[0].name


class PublisherTransport(ABC):
    # CloudEvents binary content mode on this broker (topo.runtime.cloudevents): the attribute
    # header prefix, and the header holding the data's content type (None: a property of its own).
    cloudevents_prefix: ClassVar[str] = H.CLOUDEVENTS_KAFKA_PREFIX
    cloudevents_content_type: ClassVar[str | None] = H.CONTENT_TYPE

    """Sends envelope bytes to event topics. One per process is plenty.

    Publishing is asynchronous: `publish` returns once the message is queued in the client;
    the outcome arrives later through `on_delivery` (from inside a later `publish`, `poll` or
    `flush` call on the caller's thread). Kafka: enable.idempotence=true, acks=all,
    partitioner=murmur2_random (Java-compatible key -> partition mapping). RabbitMQ: persistent
    messages (delivery_mode 2), publisher confirms tracked asynchronously (no round trip per
    message), mandatory flag with unroutable returns reported as errors.
    """

    @abstractmethod
    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Queue one message for `topic` (Kafka: `topic.topic`, key `key`, partition chosen by
        murmur2 of the key; RabbitMQ: the topology exchange, routing key `topic.routing_key`,
        and header `x-topo-key` (= `topology.rabbitmq.key_header`) set to `key` in addition to
        `headers`). Raises TransportError when the message cannot even be queued (e.g. a full
        local queue that did not drain within the client's blocking timeout)."""

    @abstractmethod
    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        """Like `publish` but to a raw destination: a Kafka topic name, or a RabbitMQ routing key
        on the topology exchange. Used to re-publish (dead-letter replay) to an original topic
        recorded in a header."""

    def redeliver(self, group: ConsumerGroup, original: str, key: str | None, body: bytes,
                  headers: Mapping[str, str], on_delivery: DeliveryCallback | None = None) -> None:
        """Re-deliver one event to `group` alone (`topo dlq replay --group`), never to the other
        groups subscribed to its topic: Kafka and memory: the group's first retry topic (a copy with
        no x-topo-retry-due-ms is due at once; `headers` carry x-topo-original-topic = `original`);
        RabbitMQ: the group's own exchange with routing key `original` (its hash exchange picks the
        key's work queue). Raises Unsupported where the group has no such path (a Kafka group whose
        subscriptions are all ordered has no retry topic)."""
        raise Unsupported(f"{type(self).__name__} cannot re-deliver to one group")

    @abstractmethod
    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports that are ready; returns how many were served."""

    @abstractmethod
    def flush(self, timeout: float) -> int:
        """Wait until every queued message has its delivery report (or `timeout` seconds pass);
        returns how many are still outstanding (0: all reported)."""

    @abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Flush for up to `timeout` seconds, then release the connection."""


class ConsumerTransport(ABC):
    """Consumes one consumer group's streams, and settles each delivery exactly once.

    Settling methods and their guarantees (at-least-once: a delivery never settled is redelivered
    to the group after a restart or rebalance):

    * `ack(d)` - handled. Kafka: mark the offset done; the committed position per partition is
      the end of the contiguous prefix of done offsets (later offsets may be done first), committed
      asynchronously at most every `commit_interval` and synchronously by `commit()`. RabbitMQ:
      basic_ack of the delivery tag.
    * `retry_later(d, delay, headers)` - non-blocking retry: send a copy with `headers` (the core
      has filled the failure headers) to the group's retry destination for `delay` seconds
      (Kafka: the retry topic in group.kafka.retry_topics whose delay_seconds == delay; RabbitMQ:
      the wait queue in group.rabbitmq.retry_queues) so that it comes back to this group's
      consumers after about `delay` seconds; the original is acked only once the copy is
      confirmed. Kafka: the retry copy carries x-topo-retry-due-ms; a transport consuming a
      retry topic hands a copy to the core only once it is due, pausing that retry partition
      (not sleeping the loop) until then, and seeking back to the copy's offset.
    * `dead_letter(d, headers)` - send a copy with `headers` to the group's dead-letter
      destination (group.kafka.dlq_topic / group.rabbitmq.dlq_queue); the original is acked only
      once the copy is confirmed.
    * `release(ds)` - give back unfinished deliveries (shutdown, revocation, or in-place retries
      abandoned): Kafka: nothing is committed for them, and if the partition is still assigned
      the consumer seeks back to the lowest released offset; RabbitMQ: basic_nack requeue=True.

    Copies sent by `retry_later` and `dead_letter` keep the original body, key and headers, plus
    the given headers (which win), so the x-topo-key header survives on RabbitMQ.
    """

    kind: ClassVar[str]
    # False while the client knows its broker to be unreachable and reconnects by itself (Kafka);
    # a transport that cannot reconnect raises BrokerUnreachable from `poll` instead (RabbitMQ).
    connected: bool = True
    disconnect_reason: str = ""

    @abstractmethod
    def subscribe(self, listener: AssignmentListener) -> None:
        """Start consuming every event topic of the group's subscriptions plus, for a Kafka group,
        its retry topics (RabbitMQ: the group's work queues, where wait queues dead-letter back).
        Non-blocking; assignments arrive through `listener` during `poll()`."""

    @abstractmethod
    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Return up to `max_messages` deliveries (possibly none), waiting at most `timeout`
        seconds for the first. `max_messages` 0 means the core has no room: serve the connection
        and return [] (or deliveries already fetched that cannot be held back). Deliveries of
        one stream are returned in stream order. Serves the
        connection (heartbeats, rebalances, delivery reports of copies, due retry partitions).
        Must return early when `wakeup()` is called, where the client allows it."""

    def wakeup(self) -> None:  # noqa: B027 - optional: not every client can interrupt a poll
        """Thread-safe: make a blocked `poll()` return soon. Default: no-op (the core then polls
        with short timeouts while work is in flight)."""

    # True when the connection stays alive only while served (heartbeats answered in `poll`):
    # the core then calls `keepalive` while a long handler call holds the loop thread.
    needs_keepalive: ClassVar[bool] = False

    def keepalive(self) -> None:  # noqa: B027 - optional: clients that heartbeat on their own need nothing
        """Called from another thread while the loop thread runs a handler (never at the same time
        as any other method but `publish` from that handler): answer heartbeats; deliveries that
        arrive are kept for the next `poll`. Errors are left for `poll` to report."""

    @abstractmethod
    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """The handler succeeded (or the event was a duplicate): see the class docstring."""

    @abstractmethod
    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        """Non-blocking retry through the group's retry destination for `delay_seconds`.
        Raises Unsupported if the group has no such destination (all subscriptions ordered)."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        """Send a copy to the group's dead-letter destination, then ack the original."""

    @abstractmethod
    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Give unfinished deliveries back for redelivery (see the class docstring)."""

    @abstractmethod
    def pause(self, streams: Iterable[StreamId]) -> None:
        """Stop fetching from these streams (backpressure). Already fetched deliveries are still
        returned by poll(). Idempotent. RabbitMQ may rely on prefetch instead and do nothing."""

    @abstractmethod
    def resume(self, streams: Iterable[StreamId]) -> None:
        """Undo `pause`. Idempotent. A transport that paused a stream for a reason of its own
        (a retry partition waiting for its due time) keeps it paused until that reason ends."""

    @abstractmethod
    def assignment(self) -> list[StreamId]:
        """Streams currently owned by this consumer."""

    @abstractmethod
    def commit(self) -> None:
        """Commit every acked position now, synchronously (Kafka) / no-op where acks are final.
        Called on shutdown and from on_revoked."""

    def publish(self, topic: EventTopic, key: str, body: bytes,
                headers: Mapping[str, str] | None = None) -> None:
        """Optional (default: Unsupported). Publish an event from inside a handler through this
        consumer's producer; the only method called from worker threads, so it must be
        thread-safe. On a Kafka exactly-once consumer it joins the current transaction, committed
        with the offsets of the events acked after it. Transports that do not implement it leave
        handlers to use a `Publisher` of their own."""
        raise Unsupported(f"{type(self).__name__} does not publish from handlers")

    def publish_and_ack(self, delivery: Delivery, events: Sequence[DerivedEvent]) -> None:
        """`delivery` was handled and its handler published `events`: send them, then ack it.

        Default (RabbitMQ, memory): each event is published and confirmed (`publish`), then
        the delivery is acked, so an ack never precedes its events' confirms (a crash in between
        redelivers the input: the events are sent again with the same ids). Kafka at-least-once
        acks once every event is confirmed; Kafka exactly-once writes them into the transaction
        that commits the delivery's offset. Raises TransportError when an event is refused: the
        delivery then stays unsettled."""
        for event in events:
            self.publish(event.topic, event.key, event.body, event.headers)
            if event.on_delivery is not None:
                destination = event.topic.routing_key if self.kind == "rabbitmq" else event.topic.topic
                event.on_delivery(DeliveryReport(destination, event.key, None))
        self.ack((delivery,))

    @abstractmethod
    def close(self) -> None:
        """Commit what is acked, leave the group (Kafka: consumer.close(); RabbitMQ: cancel
        consumers, close channel: unacked messages are requeued), release connections."""


class Tail(ABC):
    """A throwaway reader of event topics (`topo tail`): joins no group, keeps no position,
    settles nothing, publishes nothing.

    `Transport.open_tail` returns it ready: every event published after that call returned is
    seen (Kafka: partitions assigned at their end offsets, or at the beginning when asked;
    RabbitMQ: an exclusive auto-delete queue bound to the topology exchange, consumed at once;
    memory: positions at the end of each log, or at the beginning).
    """

    @abstractmethod
    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to `max_messages` deliveries (possibly none), waiting at most `timeout` seconds for
        the first; deliveries of one stream in stream order."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (RabbitMQ: the tail's queue goes with it)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """One `topo dlq replay` of one stream: its dead letters at offsets [first, end) were
    re-published with x-topo-replayed-at `at`."""

    partition: int
    first: int
    end: int
    at: str


@dataclass(frozen=True)
class ReplayRecord:
    """What `done` recorded of a dead-letter destination, for `topo dlq list`.

    Every letter of a stream before `positions[partition]` was replayed; `replays` says when
    (the most recent replays of each stream: older ones are known as replayed, not when).
    `count`: replayed letters still in the destination; None where replaying removes them
    (RabbitMQ acks them out of the dead-letter queue, so every letter listed is pending).
    """

    positions: Mapping[int, int] = field(default_factory=dict)
    replays: tuple[Replay, ...] = ()
    count: int | None = None

    def replayed_at(self, letter: Delivery) -> str | None:
        """None: not replayed; its replay's x-topo-replayed-at; "" when replayed before the remembered
        replays. A filtered replay (`--event-id`, `--since`) may record ranges beyond the position."""
        for replay in self.replays:
            if replay.partition == letter.partition and replay.first <= letter.offset < replay.end:
                return replay.at
        return "" if letter.offset < self.positions.get(letter.partition, 0) else None


class DeadLetterReader(ABC):
    """Reads a group's dead-letter destination for `topo dlq list|replay`.

    `browse` is non-destructive. `take` returns deliveries that stay in the dead-letter
    destination until `done` is called for them (Kafka: the offsets of a dedicated consumer group
    `<group.kafka.group_id>.dlq-replay` are committed, recording what was replayed and when in the
    commit's metadata; RabbitMQ: the messages are acked, i.e. removed from the dead-letter queue).
    """

    @abstractmethod
    def browse(self, limit: int, timeout: float, *, replayed: bool = True) -> list[Delivery]:
        """Up to `limit` dead letters, oldest first, waiting at most `timeout` seconds overall;
        `replayed=False`: only those not replayed yet."""

    @abstractmethod
    def take(self, limit: int, timeout: float) -> list[Delivery]:
        """Up to `limit` dead letters not yet replayed, oldest first."""

    @abstractmethod
    def done(self, deliveries: Iterable[Delivery], replayed_at: str = "") -> None:
        """Record `deliveries` (from `take`, possibly a selection of them) as replayed, at `replayed_at`
        (x-topo-replayed-at); letters taken and not passed here stay pending."""

    def replay_record(self) -> ReplayRecord:
        """What was replayed; by default nothing kept (replaying removes the letters)."""
        return ReplayRecord()

    @abstractmethod
    def close(self) -> None: ...


class Transport(ABC):
    """Factory for one broker's clients, built from the topology's connection settings.

    Constructed as `cls(topology, **options)`; connection settings (`topology.kafka`,
    `topology.rabbitmq`) are expanded from the environment with
    `topo.core.interpolate.expand` when a client is created. Options a transport does not
    know are errors.
    """

    kind: ClassVar[str]  # "kafka", "rabbitmq", "memory"
    supports_exactly_once: ClassVar[bool] = False

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    @abstractmethod
    def open_publisher(self, producer_name: str = "") -> PublisherTransport:
        """A publisher for the topology's event topics."""

    @abstractmethod
    def open_consumer(self, group: ConsumerGroup, options: ConsumeOptions) -> ConsumerTransport:
        """A member of `group`. Raises Unsupported for `options.exactly_once` when
        `supports_exactly_once` is False."""

    @abstractmethod
    def open_tail(self, topics: Sequence[EventTopic], from_beginning: bool = False) -> Tail:
        """A `Tail` of `topics`, ready to poll (Kafka: a consumer with a unique group id and
        enable.auto.commit=false, partitions assigned directly; RabbitMQ: an exclusive
        auto-delete queue bound to the topology exchange, which keeps no history, so
        `from_beginning` has no effect there)."""

    @abstractmethod
    def open_dead_letters(self, group: ConsumerGroup) -> DeadLetterReader:
        """Reader of the group's dead-letter destination."""

    def probe(self, topics: Sequence[EventTopic] = (), group: ConsumerGroup | None = None) -> None:  # noqa: B027
        """Connect within a bounded time and check that `topics` (and the group's plumbing) exist.
        Raises BrokerUnreachable or NotProvisioned. Default: nothing to check (memory)."""

    def close(self) -> None:  # noqa: B027 - transports without shared state need nothing
        """Release anything shared between the clients this transport opened."""
