"""RabbitMQ transport (pika): the broker side of the runtime on RabbitMQ 3.10+.

Objects it expects (declared by `topo apply`, or by `rabbitmq_declare.declare` in tests): the
topology's topic exchange; per group an exchange (consistent-hash on the `x-topo-key` header, or
fanout) bound to it with the group's routing keys, quorum work queues `{topology}.{group}.{i}`,
TTL wait queues per retry delay dead-lettering back to the group exchange, and a DLQ.

Threads and connections:

* Publisher: a pika `SelectConnection` on its own I/O thread. `publish` builds the message on the
  caller's thread and hands it over through a deque (one cross-thread wake-up per batch, not per
  message); the I/O thread publishes with `mandatory=True` in confirm mode and matches acks,
  nacks and `basic.return`s to messages by delivery tag. Reports are queued back and run on the
  caller's thread inside `publish`/`poll`/`flush`. The I/O thread also answers heartbeats, so an
  idle publisher stays connected.
* Consumer, tail and dead-letter reader: a `BlockingConnection` owned by the consume-loop thread.
  `poll()` runs `process_data_events`, which sends heartbeats and buffers deliveries from
  `basic_consume` callbacks; since the loop thread polls at least every 0.1 s while handlers run
  on workers, the connection never goes silent. Retry and dead-letter copies go through a second
  channel in confirm mode on the same connection and the original is acked only after the copy
  was confirmed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import pika
import pika.exceptions

from topo.core import headers as hdr
from topo.core.interpolate import UnsetVariableError, expand
from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.transport.base import (
    AssignmentListener,
    ConsumeOptions,
    ConsumerTransport,
    DeadLetterReader,
    Delivery,
    DeliveryCallback,
    DeliveryReport,
    Headers,
    PublisherTransport,
    StreamId,
    Transport,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.rabbitmq_members import Membership

CONTENT_TYPE = "application/json"
PERSISTENT = 2  # AMQP delivery_mode
# Copied into the AMQP message_id when the core sets it (see README, "The runtime on RabbitMQ").
EVENT_ID_HEADER = "x-topo-event-id"
# Broker-owned dead-lettering headers: the broker rewrites them, copies must not carry stale ones.
BROKER_DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                        "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")
TAIL_PREFETCH = 500
HAND_OVER_QUIET = 0.25  # seconds without deliveries before an idle queue is handed over
# A hand-over still waiting for handlers after this is abandoned (retried later) before the cancel;
# after it, on_revoked is called anyway (the core finishes what it can within its own deadline).
HAND_OVER_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
_counter = itertools.count(1)

AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
# add_callback_threadsafe on a connection whose I/O loop already ended
CLOSED_LOOP_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, RuntimeError)


# --------------------------------------------------------------------------- helpers


def connection_parameters(url_template: str, role: str) -> pika.URLParameters:
    """pika parameters from the topology's (still `${VAR}`-templated) URL, named for diagnostics."""
    try:
        url = expand(url_template)
    except UnsetVariableError as error:
        raise TransportError(f"RabbitMQ url {url_template!r} (broker.rabbitmq.url): {error}") from error
    try:
        params = pika.URLParameters(url)
    except Exception as error:  # pika raises ValueError/TypeError subclasses for bad query options
        raise TransportError(f"RabbitMQ url in broker.rabbitmq.url is invalid: {error}") from error
    properties = dict(params.client_properties or {})
    properties["connection_name"] = f"topo {role} pid {os.getpid()}"
    params.client_properties = properties
    return params


def where(params: pika.URLParameters) -> str:
    """Broker address for messages: never the credentials."""
    return f"RabbitMQ at {params.host}:{params.port} vhost {params.virtual_host!r}"


def connect(params: pika.URLParameters) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(params)
    except AMQP_ERRORS as error:
        raise TransportError(f"cannot connect to {where(params)}: {describe(error)}; "
                             "check broker.rabbitmq.url / RABBITMQ_URL and that the broker runs") from error


def describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


def text_headers(raw: Mapping[str, Any] | None) -> Headers:
    """The string-valued AMQP headers, decoded; tables, arrays and numbers are left out."""
    result: Headers = {}
    for name, value in (raw or {}).items():
        if isinstance(value, str):
            result[name] = value
        elif isinstance(value, bytes):
            result[name] = value.decode("utf-8", "replace")
    return result


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def original_routing_key(routing_key: str, headers: Headers, raw: Mapping[str, Any] | None) -> str:
    """The routing key the event was published with.

    A retry copy carries x-topo-original-topic (its routing key is the wait queue's name after the
    round trip); a message the broker dead-lettered (delivery limit) keeps its first routing key in
    the oldest x-death entry; anything else still has its own.
    """
    original = headers.get(hdr.ORIGINAL_TOPIC)
    if original:
        return original
    deaths = (raw or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], Mapping):
        keys = deaths[-1].get("routing-keys")
        if isinstance(keys, list) and keys:
            first = _text(keys[0])
            if first:
                return first
    return routing_key


def message_properties(headers: Headers, message_id: str | None = None,
                       timestamp: int | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        headers=headers,
        message_id=message_id if message_id is not None else headers.get(EVENT_ID_HEADER),
        timestamp=timestamp if timestamp is not None else int(time.time()),
    )


def event_headers(key_header: str, key: str | None, extra: Mapping[str, str] | None) -> Headers:
    result: Headers = dict(extra or {})
    if key is not None:
        result[key_header] = key
    return result


# --------------------------------------------------------------------------- publisher


@dataclass(slots=True)
class _Outgoing:
    routing_key: str
    key: str
    body: bytes
    properties: pika.BasicProperties
    callback: DeliveryCallback | None
    returned: str | None = None  # set by basic.return (unroutable), reported with the ack


class RabbitMQPublisher(PublisherTransport):
    """Asynchronous confirmed publishing on an I/O thread (see the module docstring)."""

    def __init__(self, params: pika.URLParameters, exchange: str, key_header: str, *,
                 max_unconfirmed: int, publish_timeout: float) -> None:
        self._params = params
        self._exchange = exchange
        self._key_header = key_header
        self._max_unconfirmed = max_unconfirmed
        self._publish_timeout = publish_timeout
        self._lock = threading.Lock()
        self._reported = threading.Condition(self._lock)
        self._pending: deque[_Outgoing] = deque()  # caller -> I/O thread
        self._reports: deque[tuple[DeliveryReport, DeliveryCallback | None]] = deque()  # I/O -> caller
        self._outstanding = 0  # published and not yet reported; touched by the caller only
        self._wake_scheduled = False
        self._failure: str | None = None
        self._closing = False
        # I/O thread state
        self._unconfirmed: OrderedDict[int, _Outgoing] = OrderedDict()
        self._tag = 0
        self._connection: Any = None
        self._channel: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"topo-rabbitmq-publisher-{next(_counter)}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(CONNECT_TIMEOUT):
            self._failure = self._failure or f"no answer within {CONNECT_TIMEOUT:.0f}s"
        if self._failure is not None:
            self._stop_io()
            raise TransportError(f"cannot open a publisher to {where(params)}: {self._failure}; "
                                 "check broker.rabbitmq.url / RABBITMQ_URL and that the broker runs")

    # ---- caller side

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        self._enqueue(topic.routing_key, key, body, headers, on_delivery)

    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        self._enqueue(destination, key, body, headers, on_delivery)

    def _enqueue(self, routing_key: str, key: str | None, body: bytes, headers: Mapping[str, str] | None,
                 on_delivery: DeliveryCallback | None) -> None:
        if self._reports:
            self._serve()
        if self._outstanding >= self._max_unconfirmed:
            self._wait_below_limit()
        message = _Outgoing(routing_key, key or "", body,
                            message_properties(event_headers(self._key_header, key, headers)), on_delivery)
        with self._lock:
            if self._failure is not None:
                raise TransportError(f"publisher to {where(self._params)} is unusable: {self._failure}")
            self._pending.append(message)
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        self._outstanding += 1
        if wake:
            self._connection.ioloop.add_callback_threadsafe(self._drain)

    def _wait_below_limit(self) -> None:
        deadline = time.monotonic() + self._publish_timeout
        while True:
            self._serve()
            if self._outstanding < self._max_unconfirmed:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{self._outstanding} messages to {where(self._params)} still unconfirmed after "
                    f"{self._publish_timeout:.0f}s (is the broker blocked by a resource alarm?)")
            with self._lock:
                if not self._reports:
                    self._reported.wait(min(remaining, 0.1))

    def _serve(self) -> int:
        served = 0
        while True:
            try:
                report, callback = self._reports.popleft()
            except IndexError:
                return served
            self._outstanding -= 1
            served += 1
            if callback is not None:
                callback(report)

    def poll(self, timeout: float = 0.0) -> int:
        served = self._serve()
        if served == 0 and timeout > 0:
            with self._lock:
                if not self._reports:
                    self._reported.wait(timeout)
            served = self._serve()
        return served

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            self._serve()
            remaining = deadline - time.monotonic()
            if self._outstanding <= 0 or remaining <= 0:
                return max(self._outstanding, 0)
            with self._lock:
                if not self._reports:
                    self._reported.wait(min(remaining, 0.1))

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop_io()
        self._serve()  # reports of messages failed by the close itself

    def _stop_io(self) -> None:
        with self._lock:
            self._closing = True
        connection = self._connection
        if connection is not None and self._thread.is_alive():
            with contextlib.suppress(*CLOSED_LOOP_ERRORS):  # already stopping
                connection.ioloop.add_callback_threadsafe(self._close_connection)
        self._thread.join(CONNECT_TIMEOUT)

    # ---- I/O thread

    def _run(self) -> None:
        try:
            self._connection = pika.SelectConnection(
                self._params, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed)
            self._connection.ioloop.start()
        except BaseException as error:  # report it to the caller's thread instead of dying silently
            self._fail(describe(error))
        finally:
            self._fail("publisher closed")
            self._ready.set()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready.set())

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        self._fail(describe(error))
        self._ready.set()
        connection.ioloop.stop()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        self._fail("publisher closed" if self._closing else f"connection lost: {describe(reason)}")
        connection.ioloop.stop()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        self._fail("publisher closed" if self._closing else f"channel closed by the broker: {describe(reason)}")
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _close_connection(self) -> None:
        connection = self._connection
        if connection.is_open:
            connection.close()
        elif not connection.is_closing:
            connection.ioloop.stop()

    def _drain(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._wake_scheduled = False
        channel = self._channel
        for index, message in enumerate(batch):
            try:
                channel.basic_publish(self._exchange, message.routing_key, message.body, message.properties,
                                      mandatory=True)
            except AMQP_ERRORS as error:
                # Not sent: report these (and everything unconfirmed) as failed.
                with self._lock:
                    self._pending.extendleft(reversed(batch[index:]))
                self._fail(f"publish failed: {describe(error)}")
                return
            self._tag += 1
            self._unconfirmed[self._tag] = message

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        key = text_headers(properties.headers).get(self._key_header, "")
        for message in self._unconfirmed.values():
            if message.returned is None and message.routing_key == method.routing_key and message.key == key:
                message.returned = (f"unroutable: no queue bound for routing key {method.routing_key} on exchange "
                                    f"{method.exchange!r} ({method.reply_code} {method.reply_text})")
                return

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        done: list[tuple[int, _Outgoing]] = []
        if method.multiple:
            while self._unconfirmed:
                tag = next(iter(self._unconfirmed))
                if tag > method.delivery_tag:
                    break
                done.append(self._unconfirmed.popitem(last=False))
        else:
            message = self._unconfirmed.pop(method.delivery_tag, None)
            if message is not None:
                done.append((method.delivery_tag, message))
        reports = []
        for _tag, message in done:
            error = message.returned or (None if acked else "nack from broker: the message was not stored")
            reports.append((DeliveryReport(message.routing_key, message.key, error), message.callback))
        with self._lock:
            self._reports.extend(reports)
            self._reported.notify_all()

    def _fail(self, reason: str) -> None:
        """Report everything not yet confirmed as failed; later publishes raise. Any thread."""
        with self._lock:
            if self._failure is None:
                self._failure = reason
            failed = [*self._unconfirmed.values(), *self._pending]
            self._unconfirmed.clear()
            self._pending.clear()
            error = f"not confirmed: {self._failure} (the message may or may not have been stored)"
            self._reports.extend((DeliveryReport(m.routing_key, m.key, error), m.callback) for m in failed)
            self._reported.notify_all()


# --------------------------------------------------------------------------- consumers


@dataclass(slots=True)
class RabbitHandle:
    """`Delivery.handle` on RabbitMQ: the message properties and the channel to settle it on."""

    properties: Any  # pika.BasicProperties
    channel: Any  # pika BlockingChannel (delivery tags are per channel)


def make_delivery(queue: str, index: int, channel: Any, method: Any, properties: Any, body: bytes,
                  key_header: str) -> Delivery:
    raw = properties.headers
    headers = text_headers(raw)
    return Delivery(
        source=queue,
        partition=index,
        offset=method.delivery_tag,
        topic=original_routing_key(method.routing_key, headers, raw),
        key=headers.get(key_header),
        headers=headers,
        body=body,
        timestamp=float(properties.timestamp or 0),
        redelivered=bool(method.redelivered),
        handle=RabbitHandle(properties, channel),
    )


def _channel_of(delivery: Delivery) -> Any:
    handle = delivery.handle
    if not isinstance(handle, RabbitHandle):
        raise TransportError(f"delivery {delivery.source}[{delivery.partition}]@{delivery.offset} was not "
                             "produced by the RabbitMQ transport")
    return handle.channel


def _nothing() -> None:
    """Wake-up marker for add_callback_threadsafe."""


class _BlockingConsumer(ConsumerTransport):
    """Shared by group consumers and tails: a BlockingConnection served from `poll()`."""

    kind: ClassVar[str] = "rabbitmq"

    def __init__(self, params: pika.URLParameters, key_header: str) -> None:
        self._params = params
        self._key_header = key_header
        self._connection = connect(params)
        self._buffer: deque[Delivery] = deque()
        self._broken: str | None = None
        self._listener: AssignmentListener | None = None
        self._announce: list[StreamId] = []  # consuming started, not yet told to the listener
        self._paused: set[StreamId] = set()

    # ---- serving the connection

    def poll(self, max_messages: int, timeout: float) -> list[Delivery]:
        self._check_usable()
        self._maintain()
        try:
            self._connection.process_data_events(time_limit=0 if self._buffer else max(timeout, 0.0))
        except AMQP_ERRORS as error:
            self._lose(error)
        self._maintain()
        batch: list[Delivery] = []
        while self._buffer and len(batch) < max_messages:
            batch.append(self._buffer.popleft())
        if batch:
            self._delivered(batch)
        return batch

    def _maintain(self) -> None:
        """Hook run around each poll on the loop thread: assignment changes, deferred settling."""
        self._announce_streams()

    def _announce_streams(self) -> None:
        if self._announce and self._listener is not None:
            streams, self._announce = self._announce, []
            self._listener.on_assigned(streams)

    def _delivered(self, batch: list[Delivery]) -> None:
        """Hook: a tail settles what it hands out."""

    def wakeup(self) -> None:
        with contextlib.suppress(*CLOSED_LOOP_ERRORS):  # closed: poll() will report it
            self._connection.add_callback_threadsafe(_nothing)

    # ---- failures

    def _gone(self) -> TransportError:
        return TransportError(f"consumer connection to {where(self._params)} is gone: {self._broken}; "
                              "unacknowledged deliveries return to their queues")

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._gone()

    def _raise(self, error: BaseException, doing: str) -> NoReturn:
        raise TransportError(f"{where(self._params)}: {doing} failed: {describe(error)}") from error

    def _lose(self, error: BaseException) -> NoReturn:
        """The connection died: every stream is lost (the broker requeues unacked messages)."""
        self._broken = describe(error)
        self._buffer.clear()
        lost = self.assignment()
        self._forget_streams()
        if lost and self._listener is not None:
            self._listener.on_lost(lost)
        raise self._gone() from error

    def _forget_streams(self) -> None:
        """Hook: drop the record of consumed streams after the connection died."""

    def _lose_from(self, error: BaseException, doing: str) -> NoReturn:
        if isinstance(error, pika.exceptions.AMQPChannelError) and self._connection.is_open:
            # One channel failed, the connection lives: report it without giving up every stream.
            raise TransportError(f"{where(self._params)}: {doing} failed: {describe(error)}") from error
        try:
            self._lose(error)
        except TransportError as lost:
            raise TransportError(f"{doing}: {lost}") from error

    # ---- interface defaults shared by both kinds

    def pause(self, streams: Iterable[StreamId]) -> None:
        # basic_qos prefetch already bounds unsettled deliveries per queue; cancelling the consumer
        # would hand a single-active-consumer queue to another process mid-key. Recorded only.
        self._paused.update(streams)

    def resume(self, streams: Iterable[StreamId]) -> None:
        self._paused.difference_update(streams)

    def commit(self) -> None:
        """Acks are final on RabbitMQ: nothing to commit."""

    def _close_connection(self) -> None:
        self._buffer.clear()
        if self._broken is None:
            self._broken = "closed"
        with contextlib.suppress(*AMQP_ERRORS):  # already gone: the broker requeues what was unacked
            if self._connection.is_open:
                self._connection.close()


@dataclass(slots=True)
class _Subscription:
    stream: StreamId
    channel: Any
    tag: str
    cancelled: bool = False  # the broker cancelled the consumer (queue deleted)
    unsettled: int = 0  # handed to the core and not settled yet
    # Delivery tags in arrival order and those settled since: acks go out as one `multiple` ack
    # for the settled prefix (one frame and one socket write per batch instead of per message)
    # plus single acks for settled tags behind a still-open one.
    delivered: deque[int] = field(default_factory=deque)
    settled: set[int] = field(default_factory=set)
    last_delivery: float = 0.0  # monotonic time of the last delivery received (or of subscribing)
    # Hand-over in progress (ordered groups): acks are held back so that the broker, once the
    # prefetch window is full, sends nothing more; see RabbitMQConsumer._try_hand_over.
    draining_since: float | None = None
    held_acks: list[int] = field(default_factory=list)
    cancelling_since: float | None = None  # basic.cancel sent: the next consumer takes over
    stopped: bool = False  # basic.cancel-ok received: nothing more arrives on this channel


class RabbitMQConsumer(_BlockingConsumer):
    """One member of a consumer group.

    Each work queue is consumed on a channel of its own (prefetch is per consumer; delivery tags
    and closing are per queue). Unordered groups consume every work queue as competing consumers.
    Ordered groups (single-active-consumer queues) consume the share
    `rabbitmq_members.Membership` assigns and hand queues over when processes join or leave.

    Hand-over without reordering: RabbitMQ 3.10 activates the next single-active consumer as soon
    as the current one cancels, and messages the old consumer gives back (nack, reject, channel
    close) reach the new one *after* the queue's ready messages. So nothing of a queue being
    handed over is ever given back:

    1. acks are held back (the broker stops sending once the prefetch window is full) until the
       core settled everything it was handed and the queue went quiet;
    2. `basic.cancel` is sent; deliveries that arrive until `cancel-ok` are kept and handed to the
       core like any other (pika's own `basic_cancel` would reject them: see `_cancel`), and a
       delivery the core releases meanwhile is handed out again instead of requeued;
    3. once the core acked all of them, `on_revoked` (it holds nothing of the queue any more),
       then the channel is closed with nothing unacked on it.
    """

    def __init__(self, params: pika.URLParameters, topology: Topology, group: ConsumerGroup,
                 options: ConsumeOptions, publish_timeout: float = 30.0) -> None:
        super().__init__(params, topology.rabbitmq.key_header)
        self._owner = threading.get_ident()  # the loop thread: the only one that may touch pika
        self._publish_timeout = publish_timeout
        self._topology = topology
        self._group = group
        self._queues = group.rabbitmq.queues
        self._wait_queues = {wait.delay_seconds: wait.name for wait in group.rabbitmq.retry_queues}
        self._tag_prefix = f"topo.{group.name}.{os.getpid()}.{next(_counter)}"
        if options.client_id:
            self._tag_prefix += f".{options.client_id}"
        self._generation = itertools.count(1)
        self._subscriptions: dict[int, _Subscription] = {}
        self._released: dict[StreamId, list[Delivery]] = {}  # nacked at the next poll, in order
        self._closing = False
        self._wanted: set[int] = set()
        # Prefetch is per consumer (quorum queues have no per-channel "global" QoS): split the
        # in-flight budget across the work queues so the whole member stays within max_in_flight.
        self._prefetch = max(1, options.max_in_flight // max(1, len(self._queues)))
        self._membership = (Membership(self._connection, group.rabbitmq.exchange, len(self._queues))
                            if group.rabbitmq.single_active_consumer else None)
        try:
            # Retry and dead-letter copies (and handler publishes) wait for their confirm here.
            self._copies = self._connection.channel()
            self._copies.confirm_delivery()
        except AMQP_ERRORS as error:
            self._close_connection()
            self._raise(error, f"setting up consumer channels for group {group.name}")
        self._copies_lock = threading.Lock()  # publish() may come from handler threads

    def subscribe(self, listener: AssignmentListener) -> None:
        self._check_usable()
        self._listener = listener
        self._rebalance()

    # ---- streams

    def assignment(self) -> list[StreamId]:
        return [self._subscriptions[index].stream for index in sorted(self._subscriptions)]

    def _forget_streams(self) -> None:
        self._subscriptions.clear()

    def _maintain(self) -> None:
        if self._released:
            self._nack_released()
        for index, subscription in list(self._subscriptions.items()):
            if subscription.cancelled or not subscription.channel.is_open:
                self._drop(index, lost=True)
            elif subscription.draining_since is not None:
                self._try_hand_over(index, subscription)
        if self._membership is not None and self._membership.due():
            self._rebalance()
        elif len(self._subscriptions) < len(self._wanted):
            self._rebalance()  # a stream was lost: consume it again
        self._announce_streams()

    def _rebalance(self) -> None:
        try:
            wanted = (self._membership.assignment() if self._membership is not None
                      else list(range(len(self._queues))))
        except AMQP_ERRORS as error:
            self._lose_from(error, f"agreeing on work queues of group {self._group.name}")
        self._wanted = set(wanted)
        now = time.monotonic()
        for index, subscription in self._subscriptions.items():
            if index not in self._wanted and subscription.draining_since is None:
                subscription.draining_since = now
            elif (index in self._wanted and subscription.draining_since is not None
                  and subscription.cancelling_since is None):
                # Wanted again before it was cancelled (after: the hand-over completes, and the
                # queue is consumed anew once dropped).
                self._stop_draining(subscription)
        for index in sorted(self._wanted - set(self._subscriptions)):
            self._consume(index)

    def _consume(self, index: int) -> None:
        queue = self._queues[index]
        tag = f"{self._tag_prefix}.{index}.{next(self._generation)}"
        channel = None
        try:
            channel = self._connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            channel.add_on_cancel_callback(functools.partial(self._on_cancelled, index, tag))
            channel.basic_consume(queue, functools.partial(self._on_message, queue, index), consumer_tag=tag)
        except pika.exceptions.ChannelClosedByBroker as error:
            hint = " (run `topo apply` to provision the topology)" if error.reply_code == 404 else ""
            raise TransportError(f"{where(self._params)}: cannot consume queue {queue!r} of group "
                                 f"{self._group.name}: {describe(error)}{hint}") from error
        except AMQP_ERRORS as error:
            self._lose_from(error, f"consuming queue {queue!r}")
        self._subscriptions[index] = _Subscription((queue, index), channel, tag, last_delivery=time.monotonic())
        self._announce.append((queue, index))

    def _on_message(self, queue: str, index: int, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        subscription = self._subscriptions.get(index)
        if subscription is not None and subscription.channel is channel:
            subscription.last_delivery = time.monotonic()
            subscription.delivered.append(method.delivery_tag)
        self._buffer.append(make_delivery(queue, index, channel, method, properties, body, self._key_header))

    def _on_cancelled(self, index: int, tag: str, _frame: Any) -> None:
        subscription = self._subscriptions.get(index)
        if subscription is not None and subscription.tag == tag:
            subscription.cancelled = True

    def _delivered(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            subscription = self._subscriptions.get(delivery.partition)
            if subscription is not None and subscription.channel is _channel_of(delivery):
                subscription.unsettled += 1

    def _settled(self, delivery: Delivery) -> _Subscription | None:
        """Count a delivery as settled; returns its subscription if that is still current."""
        subscription = self._subscriptions.get(delivery.partition)
        if subscription is None or subscription.channel is not _channel_of(delivery):
            return None
        subscription.unsettled = max(0, subscription.unsettled - 1)
        return subscription

    def _try_hand_over(self, index: int, subscription: _Subscription) -> None:
        """One step of a hand-over (see the class docstring); called from every poll."""
        if subscription.cancelling_since is None:
            if self._idle(subscription, index):
                self._cancel(subscription)
            return
        if subscription.stopped and subscription.held_acks:
            self._stop_draining(subscription)  # nothing more can arrive: settle for real now
        waiting = not subscription.stopped or self._busy(subscription)
        if waiting and time.monotonic() - subscription.cancelling_since <= HAND_OVER_TIMEOUT:
            return
        # Done, or handlers (or the broker) stuck: the core finishes what it can up to its deadline.
        if self._listener is not None:
            self._listener.on_revoked([subscription.stream])
        self._stop_draining(subscription)
        self._drop(index, lost=False)

    def _busy(self, subscription: _Subscription) -> bool:
        """The core or the buffer still holds deliveries of this subscription."""
        channel = subscription.channel
        return (subscription.unsettled > 0 or subscription.stream in self._released
                or any(_channel_of(d) is channel for d in self._buffer))

    def _idle(self, subscription: _Subscription, index: int) -> bool:
        """Ready to cancel: the core settled all it was handed and the broker is not sending."""
        now = time.monotonic()
        if self._busy(subscription):
            assert subscription.draining_since is not None
            if now - subscription.draining_since > HAND_OVER_TIMEOUT:
                self._stop_draining(subscription)  # slow handlers: keep the queue, try again later
            return False
        # While the window is not full the broker may still send: wait for a quiet moment. Quiet
        # with messages ready means this consumer is not the active one, unless it held some (then
        # it is, and the broker is about to send more). Deliveries that still race the cancel are
        # kept (see _cancel): quiet only keeps them few.
        return len(subscription.held_acks) >= self._prefetch or not (
            now - subscription.last_delivery < HAND_OVER_QUIET
            or (subscription.held_acks and self._ready_messages(subscription.channel, index) > 0))

    def _cancel(self, subscription: _Subscription) -> None:
        """Send basic.cancel and keep every delivery that arrives until cancel-ok.

        pika's `BlockingChannel.basic_cancel` rejects (requeue=True) deliveries it has not
        dispatched yet and those arriving before cancel-ok: on a single-active-consumer queue they
        would reach the next consumer after newer messages of the same key. So the method goes
        through the channel's RPC machinery (pika 1.x `Channel._rpc`) without marking the consumer
        as cancelled in pika: those deliveries reach `_on_message` like any other. Pika still
        lists the consumer and cancels it again (nowait; the broker ignores an unknown tag) when
        the channel closes."""
        def on_cancel_ok(_frame: Any) -> None:
            subscription.stopped = True

        subscription.cancelling_since = time.monotonic()
        cancel = pika.spec.Basic.Cancel(consumer_tag=subscription.tag)
        try:
            subscription.channel._impl._rpc(cancel, on_cancel_ok,
                                            [(pika.spec.Basic.CancelOk, {"consumer_tag": subscription.tag})])
        except pika.exceptions.AMQPChannelError:
            pass  # closed meanwhile: _maintain reports the stream as lost
        except AMQP_ERRORS as error:
            self._lose_from(error, f"handing over queue {subscription.stream[0]!r}")

    def _ready_messages(self, channel: Any, index: int) -> int:
        try:
            return int(channel.queue_declare(self._queues[index], passive=True).method.message_count)
        except AMQP_ERRORS:
            return 0  # the channel died: _maintain notices and treats the stream as lost

    def _stop_draining(self, subscription: _Subscription) -> None:
        subscription.draining_since = None
        held, subscription.held_acks = subscription.held_acks, []
        if held:
            self._send_acks(subscription, held, "ack")

    def _drop(self, index: int, lost: bool) -> None:
        subscription = self._subscriptions.pop(index)
        channel = subscription.channel
        self._buffer = deque(d for d in self._buffer if _channel_of(d) is not channel)
        self._released.pop(subscription.stream, None)
        with contextlib.suppress(*AMQP_ERRORS):  # already closed: the broker returned its messages
            if channel.is_open:
                channel.close()
        if lost and self._listener is not None:
            self._listener.on_lost([subscription.stream])

    # ---- settling

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        self._check_usable()
        self._ack(deliveries, "ack")

    def _ack(self, deliveries: Iterable[Delivery], doing: str) -> None:
        tags: dict[int, list[int]] = {}
        for delivery in deliveries:
            subscription = self._settled(delivery)
            if subscription is None:
                continue  # its channel closed: the broker already returned it for redelivery
            if subscription.draining_since is not None and not subscription.stopped:
                subscription.held_acks.append(delivery.offset)
            else:
                tags.setdefault(delivery.partition, []).append(delivery.offset)
        for index, settled in tags.items():
            self._send_acks(self._subscriptions[index], settled, doing)

    def _send_acks(self, subscription: _Subscription, tags: list[int], doing: str) -> None:
        """Ack `tags`: one `multiple` ack up to the end of the settled prefix of the arrival
        order, single acks for the rest. A multiple ack never covers an unsettled delivery."""
        now = set(tags)
        delivered, settled = subscription.delivered, subscription.settled
        settled.update(now)
        upto = 0
        while delivered and delivered[0] in settled:
            tag = delivered.popleft()
            settled.discard(tag)
            if tag in now:
                upto = tag
                now.discard(tag)
        channel = subscription.channel
        try:
            if upto:
                channel.basic_ack(upto, multiple=True)
            for tag in sorted(now):  # behind an unsettled delivery: stay in `settled` until it is
                channel.basic_ack(tag)
        except pika.exceptions.AMQPChannelError:
            pass  # the channel closed: the broker returns its messages; poll() reports the lost stream
        except AMQP_ERRORS as error:
            self._lose_from(error, doing)

    def _on_channel(self, delivery: Delivery, method: str, doing: str, **arguments: Any) -> None:
        channel = _channel_of(delivery)
        if not channel.is_open:
            return  # its channel closed: the broker already returned the message for redelivery
        try:
            getattr(channel, method)(delivery.offset, **arguments)
        except pika.exceptions.AMQPChannelError:
            return  # the channel closed meanwhile: same as above; poll() reports the lost stream
        except AMQP_ERRORS as error:
            self._lose_from(error, doing)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Nacked (requeue) at the next poll, together with the stream's deliveries not handed out
        yet, so they come back in their original order; on close, the connection close returns
        them instead. On a queue being handed over nothing is requeued (it would come back behind
        newer messages): released deliveries are handed out again from the buffer, in order."""
        if self._broken is not None:
            return  # the broker already requeued everything unacked on the lost connection
        again: list[Delivery] = []
        for delivery in deliveries:
            subscription = self._settled(delivery)
            if self._closing:
                continue
            if subscription is not None and subscription.draining_since is not None:
                delivery.redelivered = True
                again.append(delivery)
            else:
                self._released.setdefault(delivery.stream, []).append(delivery)
        if again:  # older than anything buffered from the same channel: back to the front
            self._buffer.extendleft(sorted(again, key=lambda d: d.offset, reverse=True))

    def _nack_released(self) -> None:
        released, self._released = self._released, {}
        for deliveries in released.values():
            channels = {id(_channel_of(d)) for d in deliveries}
            held_back = [d for d in self._buffer if id(_channel_of(d)) in channels]
            if held_back:
                self._buffer = deque(d for d in self._buffer if id(_channel_of(d)) not in channels)
            for delivery in [*sorted(deliveries, key=lambda d: d.offset), *held_back]:
                subscription = self._subscriptions.get(delivery.partition)
                if subscription is not None and subscription.channel is _channel_of(delivery):
                    subscription.settled.add(delivery.offset)  # no longer outstanding at the broker
                    subscription.last_delivery = time.monotonic()  # it comes back: not quiet yet
                self._on_channel(delivery, "basic_nack", "release", requeue=True)

    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        queue = self._wait_queue(delay_seconds)
        self._copy_then_ack(delivery, queue, headers)

    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        self._copy_then_ack(delivery, self._group.rabbitmq.dlq_queue, headers)

    def _wait_queue(self, delay_seconds: float) -> str:
        for delay, name in self._wait_queues.items():
            if abs(delay - delay_seconds) < 1e-6:
                return name
        if not self._wait_queues:
            raise Unsupported(f"group {self._group.name} has no retry wait queues (every subscription is "
                              "ordered or max_retries is 0): retry in place instead")
        known = ", ".join(f"{d:g}s" for d in sorted(self._wait_queues))
        raise Unsupported(f"group {self._group.name} has no wait queue for a {delay_seconds:g}s delay "
                          f"(declared: {known})")

    def _copy_then_ack(self, delivery: Delivery, queue: str, extra: Mapping[str, str]) -> None:
        self._check_usable()
        headers = {name: value for name, value in delivery.headers.items() if name not in BROKER_DEATH_HEADERS}
        headers.setdefault(hdr.ORIGINAL_TOPIC, delivery.topic)
        headers.update(extra)
        if delivery.key is not None:
            headers[self._key_header] = delivery.key
        original = delivery.handle.properties if isinstance(delivery.handle, RabbitHandle) else None
        properties = message_properties(
            headers,
            message_id=getattr(original, "message_id", None),
            timestamp=getattr(original, "timestamp", None),
        )
        self._confirmed_publish("", queue, delivery.body, properties, f"copy to queue {queue!r}")
        self._ack([delivery], f"ack after copy to {queue!r}")

    def _confirmed_publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties,
                           what: str) -> None:
        try:
            with self._copies_lock:
                self._copies.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError as error:
            raise TransportError(f"{what} was returned as unroutable by {where(self._params)} "
                                 f"(does the queue exist? run `topo apply`); the original stays unsettled") from error
        except pika.exceptions.NackError as error:
            raise TransportError(f"{what} was nacked by {where(self._params)}; the original stays unsettled") \
                from error
        except AMQP_ERRORS as error:
            self._lose_from(error, what)

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """A confirmed publish; callable from handler threads. pika connections are not thread-safe,
        so from any thread but the loop thread this hands the publish to the loop thread
        (`add_callback_threadsafe`, run inside its next `poll()`) and waits for the outcome."""
        self._check_usable()
        properties = message_properties(event_headers(self._key_header, key, headers))
        what = f"publish to routing key {topic.routing_key!r}"
        exchange = self._topology.rabbitmq.exchange
        if threading.get_ident() == self._owner:
            self._confirmed_publish(exchange, topic.routing_key, body, properties, what)
            return
        done = threading.Event()
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                self._confirmed_publish(exchange, topic.routing_key, body, properties, what)
            except BaseException as error:  # handed back to the calling thread
                outcome.append(error)
            finally:
                done.set()

        try:
            self._connection.add_callback_threadsafe(run)
        except CLOSED_LOOP_ERRORS as error:
            raise TransportError(f"{what}: the consumer connection is closed") from error
        if not done.wait(self._publish_timeout):
            raise TransportError(f"{what}: not confirmed within {self._publish_timeout:.0f}s (is the consume "
                                 "loop polling?)")
        if outcome:
            raise outcome[0]

    def close(self) -> None:
        # The core drained before closing; no on_revoked here (it would wait for that work again).
        # Closing the connection returns every unacked message, including deliveries released
        # since the last poll; acks held back by a hand-over are sent first.
        self._closing = True
        if self._broken is None:
            for subscription in self._subscriptions.values():
                with contextlib.suppress(TransportError):
                    self._stop_draining(subscription)
        self._subscriptions.clear()
        self._close_connection()


class RabbitMQTail(_BlockingConsumer):
    """`topo tail`: an exclusive, auto-delete, server-named queue bound to the topology exchange."""

    def __init__(self, params: pika.URLParameters, topology: Topology, topics: Sequence[EventTopic]) -> None:
        super().__init__(params, topology.rabbitmq.key_header)
        exchange = topology.rabbitmq.exchange
        self._assigned: list[StreamId] = []
        try:
            self._channel = self._connection.channel()
            declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self._queue: str = declared.method.queue
            for routing_key in sorted({topic.routing_key for topic in topics}):
                self._channel.queue_bind(self._queue, exchange, routing_key=routing_key)
            self._channel.basic_qos(prefetch_count=TAIL_PREFETCH)
        except AMQP_ERRORS as error:
            self._close_connection()
            self._raise(error, f"binding a tail queue to exchange {exchange!r}")

    def subscribe(self, listener: AssignmentListener) -> None:
        self._check_usable()
        self._listener = listener
        try:
            self._channel.basic_consume(self._queue, self._on_message)
        except AMQP_ERRORS as error:
            self._lose_from(error, f"consuming tail queue {self._queue!r}")
        self._assigned = [(self._queue, 0)]
        self._announce.append((self._queue, 0))

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._buffer.append(make_delivery(self._queue, 0, channel, method, properties, body, self._key_header))

    def assignment(self) -> list[StreamId]:
        return list(self._assigned)

    def _forget_streams(self) -> None:
        self._assigned = []

    def _delivered(self, batch: list[Delivery]) -> None:
        # A tail owns its throwaway queue: settle on hand-out, one multiple-ack per batch.
        try:
            self._channel.basic_ack(batch[-1].offset, multiple=True)
        except AMQP_ERRORS as error:
            self._lose_from(error, "tail ack")

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Already acknowledged when handed out."""

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Nothing to give back: a tail's queue disappears with it."""

    def retry_later(self, delivery: Delivery, delay_seconds: float, headers: Mapping[str, str]) -> None:
        raise Unsupported("a tail reads events; it does not retry them")

    def dead_letter(self, delivery: Delivery, headers: Mapping[str, str]) -> None:
        raise Unsupported("a tail reads events; it does not dead-letter them")

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        raise Unsupported("a tail does not publish; use a publisher")

    def close(self) -> None:
        self._assigned = []
        self._close_connection()


# --------------------------------------------------------------------------- dead letters


class RabbitMQDeadLetters(DeadLetterReader):
    """Reads a group's DLQ with basic.get (the DLQ is a quorum queue without single-active-consumer).

    `browse` reads on a throwaway channel and closes it, which returns every message to the queue;
    `take` keeps its messages unacked on a long-lived channel until `done` acks them.
    """

    def __init__(self, params: pika.URLParameters, topology: Topology, group: ConsumerGroup) -> None:
        self._params = params
        self._key_header = topology.rabbitmq.key_header
        self._queue = group.rabbitmq.dlq_queue
        self._connection = connect(params)
        self._taking: Any = None

    def _get(self, channel: Any, limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        found: list[Delivery] = []
        while len(found) < limit:
            method, properties, body = channel.basic_get(self._queue, auto_ack=False)
            if method is None:
                # Empty: give a dead letter still being written a moment, within the timeout.
                if found or time.monotonic() >= deadline:
                    break
                self._connection.process_data_events(time_limit=min(0.05, max(deadline - time.monotonic(), 0)))
                continue
            found.append(make_delivery(self._queue, 0, channel, method, properties, body, self._key_header))
        return found

    def browse(self, limit: int, timeout: float) -> list[Delivery]:
        try:
            channel = self._connection.channel()
            try:
                return self._get(channel, limit, timeout)
            finally:
                channel.close()  # returns everything read to the queue, in order
        except pika.exceptions.ChannelClosedByBroker as error:
            raise TransportError(f"{where(self._params)}: cannot read dead-letter queue {self._queue!r}: "
                                 f"{describe(error)}") from error
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: browsing {self._queue!r} failed: {describe(error)}") \
                from error

    def take(self, limit: int, timeout: float) -> list[Delivery]:
        try:
            if self._taking is None or not self._taking.is_open:
                self._taking = self._connection.channel()
            return self._get(self._taking, limit, timeout)
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: reading {self._queue!r} failed: {describe(error)}") \
                from error

    def done(self, deliveries: Iterable[Delivery]) -> None:
        pending = list(deliveries)
        if not pending:
            return
        if self._taking is None:
            raise TransportError("done() called for dead letters that were not taken with take()")
        try:
            for delivery in pending:
                self._taking.basic_ack(delivery.offset)
        except AMQP_ERRORS as error:
            raise TransportError(f"{where(self._params)}: removing replayed dead letters from {self._queue!r} "
                                 f"failed: {describe(error)}; they stay in the queue") from error

    def close(self) -> None:
        try:
            if self._connection.is_open:
                self._connection.close()  # anything taken and not done returns to the queue
        except AMQP_ERRORS:
            pass


# --------------------------------------------------------------------------- provisioning


def provision(topology: Topology, url: str | None = None) -> None:
    """Declare the topology's exchanges, queues and bindings over AMQP (idempotent): the same
    objects `topo apply` creates, for tests and for brokers without the management plugin."""
    from topo.runtime.transport.rabbitmq_declare import declare

    params = connection_parameters(url or topology.rabbitmq.url, "provision")
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


# --------------------------------------------------------------------------- factory


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

    def _params(self, role: str) -> pika.URLParameters:
        return connection_parameters(self.url or self.topology.rabbitmq.url, role)

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

    def open_tail(self, topics: Sequence[EventTopic], from_beginning: bool = False) -> ConsumerTransport:
        # RabbitMQ keeps no history for a new queue: a tail sees events published after it started.
        return RabbitMQTail(self._params("tail"), self.topology, topics)

    def open_dead_letters(self, group: ConsumerGroup) -> DeadLetterReader:
        return RabbitMQDeadLetters(self._params(f"dead letters {group.name}"), self.topology, group)

    def close(self) -> None:
        publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            publisher.close(timeout=5.0)
