"""A member of a consumer group on RabbitMQ: consumes the group's work queues and settles deliveries.

A `BlockingConnection` owned by the consume-loop thread. `poll()` runs `process_data_events`,
which sends heartbeats and buffers deliveries from `basic_consume` callbacks; since the loop
thread polls at least every 0.1 s while handlers run on workers, the connection never goes
silent. Retry and dead-letter copies go through a second channel in confirm mode on the same
connection, and the original is acked only after the copy was confirmed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NoReturn

import pika
import pika.exceptions

from topo.core import headers as hdr
from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.transport.base import (
    AssignmentListener,
    BrokerUnreachable,
    ConsumeOptions,
    ConsumerTransport,
    Delivery,
    StreamId,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.rabbitmq.connection import (
    AMQP_ERRORS,
    CLOSED_LOOP_ERRORS,
    Nodes,
    connect,
    describe,
    where,
)
from topo.runtime.transport.rabbitmq.handover import QueueHandOver, Subscription
from topo.runtime.transport.rabbitmq.members import Membership
from topo.runtime.transport.rabbitmq.messages import (
    BROKER_DEATH_HEADERS,
    RabbitHandle,
    channel_of,
    event_headers,
    make_delivery,
    message_properties,
)

_counter = itertools.count(1)


def _nothing() -> None:
    """Wake-up marker for add_callback_threadsafe."""


class RabbitMQConsumer(QueueHandOver, ConsumerTransport):
    """One member of a consumer group.

    Each work queue is consumed on a channel of its own (prefetch is per consumer; delivery tags
    and closing are per queue). Unordered groups consume every work queue as competing consumers.
    Ordered groups (single-active-consumer queues) consume the share `members.Membership`
    assigns and hand queues over when processes join or leave, without reordering (`handover`).
    """

    kind: ClassVar[str] = "rabbitmq"
    needs_keepalive: ClassVar[bool] = True  # pika's BlockingConnection heartbeats only when served

    def __init__(self, params: Nodes, topology: Topology, group: ConsumerGroup,
                 options: ConsumeOptions, publish_timeout: float = 30.0) -> None:
        self._params = params
        self._key_header = topology.rabbitmq.key_header
        self._connection = connect(params)
        self._buffer = deque()
        self._broken: str | None = None
        self._listener = None
        self._announce: list[StreamId] = []  # consuming started, not yet told to the listener
        self._paused: set[StreamId] = set()
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
        self._subscriptions: dict[int, Subscription] = {}
        self._released = {}  # nacked at the next poll, in order
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
            raise TransportError(f"{where(params)}: setting up consumer channels for group {group.name} failed: "
                                 f"{describe(error)}") from error
        self._copies_lock = threading.Lock()  # publish() may come from handler threads
        self._io_lock = threading.Lock()  # keepalive() (watchdog thread) vs. an inline handler's publish()

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

    def keepalive(self) -> None:
        with self._io_lock, contextlib.suppress(*AMQP_ERRORS):  # a lost connection: the next poll() reports it
            if self._broken is None:
                self._connection.process_data_events(time_limit=0)

    def wakeup(self) -> None:
        with contextlib.suppress(*CLOSED_LOOP_ERRORS):  # closed: poll() will report it
            self._connection.add_callback_threadsafe(_nothing)

    def _announce_streams(self) -> None:
        if self._announce and self._listener is not None:
            streams, self._announce = self._announce, []
            self._listener.on_assigned(streams)

    # ---- failures

    def _gone(self) -> TransportError:
        return BrokerUnreachable(f"consumer connection to {where(self._params)} is gone: {self._broken}; "
                              "unacknowledged deliveries return to their queues")

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._gone()

    def _lose(self, error: BaseException) -> NoReturn:
        """The connection died: every stream is lost (the broker requeues unacked messages)."""
        self._broken = describe(error)
        self._buffer.clear()
        lost = self.assignment()
        self._subscriptions.clear()
        if lost and self._listener is not None:
            self._listener.on_lost(lost)
        raise self._gone() from error

    def _lose_from(self, error: BaseException, doing: str) -> NoReturn:
        if isinstance(error, pika.exceptions.AMQPChannelError) and self._connection.is_open:
            # One channel failed, the connection lives: report it without giving up every stream.
            raise TransportError(f"{where(self._params)}: {doing} failed: {describe(error)}") from error
        try:
            self._lose(error)
        except TransportError as lost:
            raise BrokerUnreachable(f"{doing}: {lost}") from error

    def subscribe(self, listener: AssignmentListener) -> None:
        self._check_usable()
        self._listener = listener
        self._rebalance()

    # ---- streams

    def assignment(self) -> list[StreamId]:
        return [self._subscriptions[index].stream for index in sorted(self._subscriptions)]

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
        self._subscriptions[index] = Subscription((queue, index), channel, tag, last_delivery=time.monotonic())
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
            if subscription is not None and subscription.channel is channel_of(delivery):
                subscription.unsettled += 1

    def _settled(self, delivery: Delivery) -> Subscription | None:
        """Count a delivery as settled; returns its subscription if that is still current."""
        subscription = self._subscriptions.get(delivery.partition)
        if subscription is None or subscription.channel is not channel_of(delivery):
            return None
        subscription.unsettled = max(0, subscription.unsettled - 1)
        return subscription

    def _drop(self, index: int, lost: bool) -> None:
        subscription = self._subscriptions.pop(index)
        channel = subscription.channel
        self._buffer = deque(d for d in self._buffer if channel_of(d) is not channel)
        self._released.pop(subscription.stream, None)
        with contextlib.suppress(*AMQP_ERRORS):  # already closed: the broker returned its messages
            if channel.is_open:
                channel.close()
        if lost and self._listener is not None:
            self._listener.on_lost([subscription.stream])

    # ---- flow control and committing

    def pause(self, streams: Iterable[StreamId]) -> None:
        # basic_qos prefetch already bounds unsettled deliveries per queue; cancelling the consumer
        # would hand a single-active-consumer queue to another process mid-key. Recorded only.
        self._paused.update(streams)

    def resume(self, streams: Iterable[StreamId]) -> None:
        self._paused.difference_update(streams)

    def commit(self) -> None:
        """Acks are final on RabbitMQ: nothing to commit."""

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

    def _send_acks(self, subscription: Subscription, tags: list[int], doing: str) -> None:
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
        channel = channel_of(delivery)
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
            channels = {id(channel_of(d)) for d in deliveries}
            held_back = [d for d in self._buffer if id(channel_of(d)) in channels]
            if held_back:
                self._buffer = deque(d for d in self._buffer if id(channel_of(d)) not in channels)
            for delivery in [*sorted(deliveries, key=lambda d: d.offset), *held_back]:
                subscription = self._subscriptions.get(delivery.partition)
                if subscription is not None and subscription.channel is channel_of(delivery):
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
            with self._io_lock:
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

    def _close_connection(self) -> None:
        self._buffer.clear()
        if self._broken is None:
            self._broken = "closed"
        with contextlib.suppress(*AMQP_ERRORS):  # already gone: the broker requeues what was unacked
            if self._connection.is_open:
                self._connection.close()
