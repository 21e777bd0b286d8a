"""pika internals the RabbitMQ hand-over relies on (`rabbitmq.compat`), checked without a broker.

The installed pika's real channel objects run the compat call against a recording stand-in for the
connection; these tests fail when a pika upgrade moves or changes what the call uses, before any
broker test could notice a reordered hand-over. pyproject.toml pins pika to the versions this
passes on.
"""

from __future__ import annotations

import inspect
from typing import Any

import pika.callback
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from topo.runtime.transport.rabbitmq.compat import cancel_keeping_deliveries

CHANNEL = 1
TAG = "topo.workers.1.1.0.1"


class RecordingConnection:
    """What `pika.channel.Channel` uses of its connection: the callback registry and the sender."""

    def __init__(self) -> None:
        self.callbacks = pika.callback.CallbackManager()
        self.sent: list[Any] = []

    def _send_method(self, channel_number: int, method: Any, content: Any = None) -> None:
        self.sent.append(method)

    def receive(self, method: Any) -> None:
        """Dispatch a reply as `pika.connection.Connection._process_callbacks` does."""
        self.callbacks.process(CHANNEL, method, self, pika.frame.Method(CHANNEL, method))


def open_consuming_channel() -> tuple[RecordingConnection, BlockingChannel, list[int]]:
    """A BlockingChannel over a real, open pika Channel with one consumer `TAG` registered."""
    connection = RecordingConnection()
    impl = pika.channel.Channel(connection, CHANNEL, None)  # type: ignore[arg-type]
    impl._set_state(impl.OPEN)
    channel = BlockingChannel(impl, connection)  # type: ignore[arg-type]
    received: list[int] = []
    impl._consumers[TAG] = lambda _channel, method, _properties, _body: received.append(method.delivery_tag)
    return connection, channel, received


def deliver(channel: BlockingChannel, delivery_tag: int) -> None:
    """Feed one message to the channel the way the connection hands frames over."""
    impl = channel._impl
    body = b"{}"
    impl._handle_content_frame(pika.frame.Method(CHANNEL, pika.spec.Basic.Deliver(
        consumer_tag=TAG, delivery_tag=delivery_tag, routing_key="order.placed.1")))
    impl._handle_content_frame(pika.frame.Header(CHANNEL, len(body), pika.spec.BasicProperties()))
    impl._handle_content_frame(pika.frame.Body(CHANNEL, body))


def test_the_private_names_exist_with_the_signature_used() -> None:
    _, channel, _ = open_consuming_channel()
    assert isinstance(channel._impl, pika.channel.Channel)
    parameters = list(inspect.signature(pika.channel.Channel._rpc).parameters)
    assert parameters == ["self", "method", "callback", "acceptable_replies"]
    assert pika.spec.Basic.Cancel.synchronous  # _rpc only takes synchronous methods
    assert pika.spec.Basic.Cancel(consumer_tag=TAG).consumer_tag == TAG
    assert pika.spec.Basic.CancelOk(consumer_tag=TAG).consumer_tag == TAG


def test_cancel_sends_basic_cancel_and_reports_cancel_ok() -> None:
    connection, channel, _ = open_consuming_channel()
    confirmed: list[Any] = []
    cancel_keeping_deliveries(channel, TAG, confirmed.append)
    [sent] = connection.sent
    assert isinstance(sent, pika.spec.Basic.Cancel)
    assert sent.consumer_tag == TAG and not sent.nowait
    connection.receive(pika.spec.Basic.CancelOk(consumer_tag="someone-else"))
    assert confirmed == []  # the reply is matched on the consumer tag
    connection.receive(pika.spec.Basic.CancelOk(consumer_tag=TAG))
    [frame] = confirmed
    assert frame.method.consumer_tag == TAG
    assert not channel._impl._blocking  # the channel's RPC completed: later calls are not queued


def test_deliveries_racing_the_cancel_reach_the_consumer() -> None:
    """The reason for the private call: pika's basic_cancel would reject (requeue) these."""
    connection, channel, received = open_consuming_channel()
    deliver(channel, 1)
    cancel_keeping_deliveries(channel, TAG, lambda _frame: None)
    deliver(channel, 2)
    deliver(channel, 3)
    assert received == [1, 2, 3]
    assert not any(isinstance(method, pika.spec.Basic.Reject) for method in connection.sent)


def test_a_closed_channel_raises_a_channel_error() -> None:
    """What `handover` treats as "closed meanwhile"."""
    _, channel, _ = open_consuming_channel()
    channel._impl._set_state(channel._impl.CLOSED)
    with pytest.raises(pika.exceptions.AMQPChannelError):
        cancel_keeping_deliveries(channel, TAG, lambda _frame: None)
