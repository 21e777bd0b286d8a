"""Confirmed publishing to RabbitMQ on an I/O thread of its own.

A pika `SelectConnection` runs on the publisher's thread. `publish` builds the message on the
caller's thread and hands it over through a deque (one cross-thread wake-up per batch, not per
message); the I/O thread publishes with `mandatory=True` in confirm mode and matches acks, nacks
and `basic.return`s to messages by delivery tag. Reports are queued back and run on the caller's
thread inside `publish`/`poll`/`flush`. The I/O thread also answers heartbeats, so an idle
publisher stays connected.

Failover: the publisher is given every node of the broker's URL (`Nodes`). When its connection
is lost it reconnects to the next node, backing off, and goes on; messages whose confirm was
outstanding are reported failed ("not confirmed ... may or may not have been stored"), never
confirmed; messages not sent yet wait for the new connection, for at most `publish_timeout`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pika
import pika.spec

from topo.core import headers as hdr
from topo.core.model import ConsumerGroup, EventTopic
from topo.runtime.transport.base import (
    BrokerRefused,
    BrokerUnreachable,
    DeliveryCallback,
    DeliveryReport,
    PublisherTransport,
    TransportError,
)
from topo.runtime.transport.rabbitmq.connection import (
    AMQP_ERRORS,
    CHECK_URL,
    CLOSED_LOOP_ERRORS,
    CONNECT_TIMEOUT,
    Nodes,
    connect_failure,
    describe,
    where,
)
from topo.runtime.transport.rabbitmq.messages import event_headers, message_properties, text_headers

_counter = itertools.count(1)
FIRST_BACKOFF = 0.2  # seconds before reconnecting to the next node; doubles up to MAX_BACKOFF
MAX_BACKOFF = 3.0


@dataclass(slots=True)
class _Outgoing:
    routing_key: str
    key: str
    body: bytes
    properties: pika.BasicProperties
    callback: DeliveryCallback | None
    returned: str | None = None  # set by basic.return (unroutable), reported with the ack
    exchange: str | None = None  # None: the topology exchange


class RabbitMQPublisher(PublisherTransport):
    """Asynchronous confirmed publishing on an I/O thread (see the module docstring)."""

    # The RabbitMQ binding of CloudEvents: `ce-` headers, the content type in the AMQP property.
    cloudevents_prefix: ClassVar[str] = hdr.CLOUDEVENTS_RABBITMQ_PREFIX
    cloudevents_content_type: ClassVar[str | None] = None

    def __init__(self, nodes: Nodes, exchange: str, key_header: str, *,
                 max_unconfirmed: int, publish_timeout: float) -> None:
        self._nodes = nodes
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
        self._stopping = threading.Event()  # wakes the I/O thread from a reconnect backoff
        # I/O thread state
        self._unconfirmed: OrderedDict[int, _Outgoing] = OrderedDict()
        self._tag = 0
        self._connection: Any = None
        self._channel: Any = None  # None while (re)connecting
        self._session_ready = False
        self._lost_at: float | None = None  # monotonic time the last connection was lost
        self.reconnects = 0  # sessions opened after a lost one
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"topo-rabbitmq-publisher-{next(_counter)}",
                                        daemon=True)
        self._thread.start()
        limit = CONNECT_TIMEOUT * len(nodes.all)
        if not self._ready.wait(limit):
            self._failure = self._failure or f"no answer within {limit:.0f}s"
        if self._failure is not None:
            self._stop_io()
            if self._open_error is not None:
                raise connect_failure(nodes.all[0] if len(nodes.all) == 1 else nodes, self._open_error)
            raise BrokerUnreachable(f"rabbitmq: cannot open a publisher to {where(nodes)}: {self._failure}; "
                                    f"{CHECK_URL}")

    # ---- caller side

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        self._enqueue(topic.routing_key, key, body, headers, on_delivery)

    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        self._enqueue(destination, key, body, headers, on_delivery)

    def redeliver(self, group: ConsumerGroup, original: str, key: str | None, body: bytes,
                  headers: Mapping[str, str], on_delivery: DeliveryCallback | None = None) -> None:
        self._enqueue(original, key, body, headers, on_delivery, group.rabbitmq.exchange)

    def _enqueue(self, routing_key: str, key: str | None, body: bytes, headers: Mapping[str, str] | None,
                 on_delivery: DeliveryCallback | None, exchange: str | None = None) -> None:
        if self._reports:
            self._serve()
        if self._outstanding >= self._max_unconfirmed:
            self._wait_below_limit()
        message = _Outgoing(routing_key, key or "", body,
                            message_properties(event_headers(self._key_header, key, headers)), on_delivery,
                            exchange=exchange)
        with self._lock:
            if self._failure is not None:
                raise TransportError(f"publisher to {where(self._nodes)} is unusable: {self._failure}")
            self._pending.append(message)
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        self._outstanding += 1
        if wake:
            with contextlib.suppress(*CLOSED_LOOP_ERRORS):  # reconnecting: the next session drains it
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
                    f"{self._outstanding} messages to {where(self._nodes)} still unconfirmed after "
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
        self._stopping.set()
        connection = self._connection
        if connection is not None and self._thread.is_alive():
            with contextlib.suppress(*CLOSED_LOOP_ERRORS):  # already stopping
                connection.ioloop.add_callback_threadsafe(self._close_connection)
        self._thread.join(CONNECT_TIMEOUT)

    # ---- I/O thread

    def _run(self) -> None:
        """Connect, serve the connection until it ends and, unless closing, reconnect to the next
        node after a backoff. Before the first session, one failed round over every node (or
        refused credentials, or an untrusted certificate) ends it: the constructor says why."""
        node = self._nodes.ordered()[0]
        backoff = FIRST_BACKOFF
        failed_first = 0
        try:
            while not self._closing:
                self._session_ready = False
                self._open_error = None
                try:
                    self._connection = pika.SelectConnection(
                        node, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                        on_close_callback=self._on_closed)
                    self._connection.ioloop.start()
                except BaseException as error:  # report it instead of dying silently
                    self._open_error = error
                if self._closing or self._failure is not None:
                    return
                if self._session_ready:
                    backoff = FIRST_BACKOFF
                elif not self._ready.is_set():
                    failed_first += 1
                    cause = self._open_error
                    refused = cause is not None and isinstance(connect_failure(node, cause), BrokerRefused)
                    if refused or failed_first >= len(self._nodes.all):
                        self._fail(describe(cause) if cause is not None else "no node answered")
                        return
                self._fail_stale_pending()
                node = self._nodes.next_after(node)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self._fail("publisher closed")
            self._ready.set()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._tag = 0  # delivery tags count per channel: a new session starts again at 1
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirming)

    def _on_confirming(self, _frame: Any) -> None:
        """Confirm mode is on: the session may publish; what waited for it goes out now."""
        if self._lost_at is not None:
            self.reconnects += 1
            self._lost_at = None
        self._nodes.answered(self._connection.params)
        self._session_ready = True
        self._ready.set()
        self._drain()

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        self._open_error = error
        connection.ioloop.stop()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        self._channel = None
        if not self._closing and self._session_ready:
            params = connection.params
            self._lose(f"connection to {params.host}:{params.port} lost: {describe(reason)}")
        connection.ioloop.stop()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if self._connection is not None and not self._connection.is_open:
            return  # the connection's end closes its channels: _on_closed reports it
        self._channel = None
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
        channel = self._channel
        if channel is None or not self._session_ready:  # reconnecting: the next session drains
            with self._lock:
                self._wake_scheduled = False
            return
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._wake_scheduled = False
        for index, message in enumerate(batch):
            try:
                channel.basic_publish(message.exchange or self._exchange, message.routing_key, message.body,
                                      message.properties, mandatory=True)
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

    def _lose(self, reason: str) -> None:
        """The connection is gone: what awaited a confirm is reported failed (it may or may not
        have been stored; never reported confirmed); what was not sent waits for the next node."""
        self._lost_at = time.monotonic()
        self._session_ready = False
        with self._lock:
            failed = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            error = f"not confirmed: {reason} (the message may or may not have been stored)"
            self._reports.extend((DeliveryReport(m.routing_key, m.key, error), m.callback) for m in failed)
            self._reported.notify_all()

    def _fail_stale_pending(self) -> None:
        """Messages kept for the next session fail once no node answered for `publish_timeout`."""
        if self._lost_at is None or time.monotonic() - self._lost_at < self._publish_timeout:
            return
        with self._lock:
            failed = list(self._pending)
            self._pending.clear()
            error = (f"not sent: no node of {where(self._nodes)} answered for {self._publish_timeout:.0f}s "
                     "(the message was not stored)")
            self._reports.extend((DeliveryReport(m.routing_key, m.key, error), m.callback) for m in failed)
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

