"""Handing a work queue of an ordered group to another member without reordering.

Ordered groups consume single-active-consumer queues (see `members`). RabbitMQ 3.10 activates
the next single-active consumer as soon as the current one cancels, and messages the old
consumer gives back (nack, reject, channel close) reach the new one *after* the queue's ready
messages. So nothing of a queue being handed over is ever given back:

1. acks are held back (the broker stops sending once the prefetch window is full) until the
   core settled everything it was handed and the queue went quiet;
2. `basic.cancel` is sent; deliveries that arrive until `cancel-ok` are kept and handed to the
   core like any other (pika's own `basic_cancel` would reject them: see
   `compat.cancel_keeping_deliveries`), and a delivery the core releases meanwhile is handed
   out again instead of requeued;
3. once the core acked all of them, `on_revoked` (it holds nothing of the queue any more),
   then the channel is closed with nothing unacked on it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pika.exceptions

from topo.runtime.transport.base import AssignmentListener, Delivery, StreamId
from topo.runtime.transport.rabbitmq.compat import cancel_keeping_deliveries
from topo.runtime.transport.rabbitmq.connection import AMQP_ERRORS
from topo.runtime.transport.rabbitmq.messages import channel_of

HAND_OVER_QUIET = 0.25  # seconds without deliveries before an idle queue is handed over
# A hand-over still waiting for handlers after this is abandoned (retried later) before the cancel;
# after it, on_revoked is called anyway (the core finishes what it can within its own deadline).
HAND_OVER_TIMEOUT = 30.0


@dataclass(slots=True)
class Subscription:
    """One work queue a group member consumes, on a channel of its own."""

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
    # prefetch window is full, sends nothing more (step 1 of the module docstring).
    draining_since: float | None = None
    held_acks: list[int] = field(default_factory=list)
    cancelling_since: float | None = None  # basic.cancel sent: the next consumer takes over
    stopped: bool = False  # basic.cancel-ok received: nothing more arrives on this channel


class QueueHandOver(ABC):
    """The hand-over steps of a group consumer (`consumer.RabbitMQConsumer` mixes them in), run on
    the loop thread from every poll while a subscription is draining."""

    # The consumer state the steps read.
    _listener: AssignmentListener | None
    _buffer: deque[Delivery]  # fetched, not yet handed to the core
    _released: dict[StreamId, list[Delivery]]  # released by the core, nacked at the next poll
    _prefetch: int
    _queues: Sequence[str]

    @abstractmethod
    def _send_acks(self, subscription: Subscription, tags: list[int], doing: str) -> None:
        """Ack settled delivery tags on the subscription's channel."""

    @abstractmethod
    def _drop(self, index: int, lost: bool) -> None:
        """Close the subscription's channel and forget it (`lost`: tell the listener)."""

    @abstractmethod
    def _lose_from(self, error: BaseException, doing: str) -> NoReturn:
        """Raise a TransportError for a failed broker operation (the connection may be gone)."""

    def _try_hand_over(self, index: int, subscription: Subscription) -> None:
        """One step of a hand-over (see the module docstring); called from every poll."""
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

    def _busy(self, subscription: Subscription) -> bool:
        """The core or the buffer still holds deliveries of this subscription."""
        channel = subscription.channel
        return (subscription.unsettled > 0 or subscription.stream in self._released
                or any(channel_of(d) is channel for d in self._buffer))

    def _idle(self, subscription: Subscription, index: int) -> bool:
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

    def _cancel(self, subscription: Subscription) -> None:
        """Send basic.cancel and keep every delivery that arrives until cancel-ok."""
        def on_cancel_ok(_frame: Any) -> None:
            subscription.stopped = True

        subscription.cancelling_since = time.monotonic()
        try:
            cancel_keeping_deliveries(subscription.channel, subscription.tag, on_cancel_ok)
        except pika.exceptions.AMQPChannelError:
            pass  # closed meanwhile: the consumer's next poll reports the stream as lost
        except AMQP_ERRORS as error:
            self._lose_from(error, f"handing over queue {subscription.stream[0]!r}")

    def _ready_messages(self, channel: Any, index: int) -> int:
        try:
            return int(channel.queue_declare(self._queues[index], passive=True).method.message_count)
        except AMQP_ERRORS:
            return 0  # the channel died: the consumer's next poll treats the stream as lost

    def _stop_draining(self, subscription: Subscription) -> None:
        subscription.draining_since = None
        held, subscription.held_acks = subscription.held_acks, []
        if held:
            self._send_acks(subscription, held, "ack")
