"""Smoke tests on the real RabbitMQ node: confirms, consistent-hash exchange, quorum queue dead-lettering."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.support.waiting import wait_until

pytestmark = pytest.mark.rabbitmq

TIMEOUT = 30.0


@pytest.fixture
def channel(rabbit_vhost: Any) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_vhost.url))
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        if connection.is_open:
            connection.close()


def _depth(channel: BlockingChannel, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def test_publisher_confirms_and_unroutable_returns(channel: BlockingChannel, unique_name: str) -> None:
    queue = f"{unique_name}-q"
    channel.queue_declare(queue, durable=True)
    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")
    for i in range(100):
        # With confirms on, basic_publish returns only once the broker acked; a nack raises.
        channel.basic_publish("", queue, f'{{"n": {i}}}'.encode(), properties=persistent, mandatory=True)
    assert _depth(channel, queue) == 100

    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", f"{unique_name}-nowhere", b"lost", mandatory=True)


def test_consistent_hash_exchange_spreads_keys_and_keeps_each_key_on_one_queue(
    channel: BlockingChannel, unique_name: str
) -> None:
    exchange = f"{unique_name}-hash"
    channel.exchange_declare(exchange, exchange_type="x-consistent-hash", durable=True)
    queues = [f"{unique_name}-shard-{i}" for i in range(4)]
    for queue in queues:
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="1")  # the binding key is the queue's weight

    keys = [f"chain-{i}" for i in range(400)]
    for key in keys:
        channel.basic_publish(exchange, key, key.encode(), mandatory=True)
    depths = {queue: _depth(channel, queue) for queue in queues}
    assert sum(depths.values()) == len(keys)
    assert all(depth >= len(keys) // 16 for depth in depths.values()), depths  # every shard gets a share

    # One key always lands on the same queue.
    for _ in range(20):
        channel.basic_publish(exchange, "chain-sticky", b"again", mandatory=True)
    holders = [queue for queue in queues if _depth(channel, queue) - depths[queue] > 0]
    assert len(holders) == 1
    assert _depth(channel, holders[0]) - depths[holders[0]] == 20


def test_quorum_queue_dead_letters_after_delivery_limit(channel: BlockingChannel, unique_name: str) -> None:
    dlx, dlq, queue = f"{unique_name}-dlx", f"{unique_name}-dead", f"{unique_name}-work"
    channel.exchange_declare(dlx, exchange_type="direct", durable=True)
    channel.queue_declare(dlq, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dlq, dlx, routing_key="dead")
    delivery_limit = 2
    channel.queue_declare(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": dlx,
            "x-dead-letter-routing-key": "dead",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    channel.basic_publish("", queue, b"poison", properties=pika.BasicProperties(message_id="m-1"), mandatory=True)

    channel.basic_qos(prefetch_count=1)
    deliveries = 0
    deadline = time.monotonic() + TIMEOUT
    for method, _props, body in channel.consume(queue, inactivity_timeout=0.5):
        assert time.monotonic() < deadline, f"message still in {queue} after {deliveries} deliveries"
        if method is None:  # idle: the message is gone from the work queue, or not yet redelivered
            if _depth(channel, queue) == 0 and _depth(channel, dlq) == 1:
                break
            continue
        assert body == b"poison"
        deliveries += 1
        channel.basic_nack(method.delivery_tag, requeue=True)
    channel.cancel()
    assert deliveries == delivery_limit + 1

    dead = _get_one(channel, dlq)
    assert dead is not None
    _method, props, body = dead
    assert body == b"poison"
    assert props.message_id == "m-1"
    deaths = props.headers["x-death"]
    assert deaths[0]["reason"] == "delivery_limit"
    assert deaths[0]["queue"] == queue
    assert Counter(d["reason"] for d in deaths) == Counter({"delivery_limit": 1})


def _get_one(channel: BlockingChannel, queue: str) -> tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes] | None:
    def got() -> tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes] | None:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        return (method, props, body) if method is not None else None

    return wait_until(got, TIMEOUT, f"a message in {queue}")
