"""Smoke tests on the real Kafka broker: plain produce/consume, transactions, group rebalancing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.support.waiting import wait_until

pytestmark = pytest.mark.kafka

TIMEOUT = 60.0


def _delivered(errors: list[KafkaError]) -> Callable[[KafkaError | None, Message], None]:
    def callback(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    return callback


def _text(data: bytes | str | None) -> str:
    assert data is not None
    return data.decode() if isinstance(data, bytes) else data


def _consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **extra,
    }
    return Consumer(config)


def _consume(consumer: Consumer, count: int, timeout: float = TIMEOUT) -> list[Message]:
    """Poll until ``count`` messages arrived (failing on a consumer error or after ``timeout``)."""
    received: list[Message] = []

    def enough() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            received.append(msg)
        return len(received) >= count

    wait_until(enough, timeout, lambda: f"{count} messages (got {len(received)})", interval=0)
    return received


@pytest.fixture
def closing() -> Iterator[Callable[[Consumer], Consumer]]:
    """Registers consumers to close at teardown, even when the test fails."""
    consumers: list[Consumer] = []

    def register(consumer: Consumer) -> Consumer:
        consumers.append(consumer)
        return consumer

    yield register
    for consumer in consumers:
        consumer.close()


def test_produce_and_consume_keeps_per_key_order(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_name: str, closing: Any
) -> None:
    topic = kafka_topics("orders", partitions=3)
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    sent = [(f"key-{i % 5}", f"value-{i}") for i in range(50)]
    for key, value in sent:
        producer.produce(topic, value=value.encode(), key=key.encode(), on_delivery=_delivered(errors))
    assert producer.flush(30) == 0
    assert errors == []

    consumer = closing(_consumer(kafka_bootstrap, f"{unique_name}-group"))
    consumer.subscribe([topic])
    received = _consume(consumer, len(sent))

    assert sorted((_text(m.key()), _text(m.value())) for m in received) == sorted(sent)
    by_key: dict[str, list[int]] = {}
    for msg in received:
        by_key.setdefault(_text(msg.key()), []).append(int(_text(msg.value()).split("-")[1]))
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), f"order of {key} broken: {numbers}"
    assert {m.partition() for m in received} <= {0, 1, 2}


def test_transactions_hide_aborted_records_from_read_committed(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_name: str, closing: Any
) -> None:
    topic = kafka_topics("tx")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{unique_name}-tx"})
    producer.init_transactions(30)
    for batch, commit in (("a", True), ("b", False), ("c", True)):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=f"{batch}{i}".encode())
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # the aborted records really reach the log
            producer.abort_transaction(30)

    committed = closing(_consumer(kafka_bootstrap, f"{unique_name}-rc", **{"isolation.level": "read_committed"}))
    committed.assign([TopicPartition(topic, 0, 0)])
    values = [_text(m.value()) for m in _consume(committed, 10)]
    assert values == [f"a{i}" for i in range(5)] + [f"c{i}" for i in range(5)]

    # Nothing else is coming: the consumer's position reached the end of the log (commit markers included).
    _low, high = committed.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    def at_the_end() -> bool:
        if committed.position([TopicPartition(topic, 0)])[0].offset >= high:
            return True
        extra = committed.poll(0.2)
        assert extra is None or extra.error() is not None, f"unexpected record {extra.value()!r}"
        return False

    wait_until(at_the_end, TIMEOUT, "the read_committed consumer to reach the end of the log", interval=0)

    uncommitted = closing(_consumer(kafka_bootstrap, f"{unique_name}-ru", **{"isolation.level": "read_uncommitted"}))
    uncommitted.assign([TopicPartition(topic, 0, 0)])
    assert len(_consume(uncommitted, 15)) == 15  # the aborted batch is in the log, just not visible


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_consumer_group_rebalances_partitions_between_two_members(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], unique_name: str, closing: Any, protocol: str
) -> None:
    partitions = 4
    topic = kafka_topics("rebalance", partitions=partitions)
    group = f"{unique_name}-group"
    extra: dict[str, Any] = {"group.protocol": protocol}
    if protocol == "classic":
        extra["partition.assignment.strategy"] = "cooperative-sticky"
        extra["session.timeout.ms"] = 10000
        extra["heartbeat.interval.ms"] = 500

    def assigned(consumer: Consumer) -> set[int]:
        return {tp.partition for tp in consumer.assignment()}

    def poll_until(members: list[Consumer], done: Callable[[], bool], what: str) -> None:
        def polled() -> bool:
            if done():
                return True
            for consumer in members:
                msg = consumer.poll(0.1)
                assert msg is None or msg.error() is None, msg.error() if msg else None
            return False

        wait_until(polled, TIMEOUT, lambda: f"{what}: " + ", ".join(str(sorted(assigned(c))) for c in members),
                   interval=0)

    first = closing(_consumer(kafka_bootstrap, group, **extra))
    first.subscribe([topic])
    poll_until([first], lambda: len(assigned(first)) == partitions, "the first member to own every partition")

    second = _consumer(kafka_bootstrap, group, **extra)
    second.subscribe([topic])

    def split_evenly() -> bool:
        one, two = assigned(first), assigned(second)
        return one.isdisjoint(two) and len(one) == len(two) == partitions // 2 and len(one | two) == partitions

    try:
        poll_until([first, second], split_evenly, "the partitions to be split between two members")
    finally:
        second.close()  # leaves the group at once

    poll_until([first], lambda: len(assigned(first)) == partitions, "the first member to get every partition back")


def test_broker_restart_keeps_topics_and_committed_offsets(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], kafka_broker: Any, unique_name: str, closing: Any
) -> None:
    topic = kafka_topics("durable")
    group = f"{unique_name}-group"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(4):
        producer.produce(topic, value=f"m{i}".encode())
    assert producer.flush(30) == 0
    consumer = _consumer(kafka_bootstrap, group)
    consumer.subscribe([topic])
    first_two = _consume(consumer, 2)
    consumer.commit(message=first_two[-1], asynchronous=False)
    consumer.close()

    kafka_broker.restart()

    again = closing(_consumer(kafka_bootstrap, group))
    again.subscribe([topic])
    assert [_text(m.value()) for m in _consume(again, 2)] == ["m2", "m3"]
