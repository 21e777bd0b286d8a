"""CloudEvents in binary content mode, checked against the `cloudevents` SDK on the real brokers: the
SDK reads the events topo publishes with `envelope: cloudevents`, and a topo group handles events the
SDK made (deduplicated on source + id)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from topologies import Bus

from tests.support.waiting import wait_until
from topo.core.names import cloudevents_source
from topo.runtime.cloudevents import FOREIGN_IDS

pytestmark = pytest.mark.timeout(180)


@contextmanager
def raw_reader(bus: Bus, event: str, chain: int) -> Iterator[Callable[[], Any]]:
    """Reads the event topic with the broker's own client, as another platform would; yields a
    function returning the SDK's CloudEvent of the first message (and the raw data bytes)."""
    topic = bus.topology.event_topic(event, chain)
    if bus.kind == "kafka":
        consumer = Consumer({"bootstrap.servers": bus.env["KAFKA_BOOTSTRAP_SERVERS"], "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False})
        partitions = consumer.list_topics(topic.topic, timeout=30).topics[topic.topic].partitions
        consumer.assign([TopicPartition(topic.topic, p, OFFSET_BEGINNING) for p in partitions])

        def read_kafka() -> Any:
            found: list[Any] = []
            wait_until(lambda: found.extend(m for m in consumer.consume(10, 0.5) if m.error() is None) or found,
                       30, f"a record on {topic.topic}")
            record = found[0]
            message = ce_kafka.KafkaMessage(headers=dict(record.headers() or []), key=record.key(),
                                            value=record.value())
            return ce_kafka.from_binary(message, JSONFormat()), record.value()

        try:
            yield read_kafka
        finally:
            consumer.close()
        return
    connection = pika.BlockingConnection(pika.URLParameters(bus.env["RABBITMQ_URL"]))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, bus.topology.rabbitmq.exchange, topic.routing_key)

    def read_rabbitmq() -> Any:
        got: list[Any] = []
        wait_until(lambda: (got.append(channel.basic_get(queue, auto_ack=True)) or got[-1][0] is not None), 30,
                   f"a message for {topic.routing_key}")
        _method, properties, body = got[-1]
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in (properties.headers or {}).items()}
        message = ce_rabbitmq.RabbitMQMessage(headers=headers, content_type=properties.content_type, body=body)
        return ce_rabbitmq.from_binary(message, JSONFormat()), body

    try:
        yield read_rabbitmq
    finally:
        connection.close()


def test_the_sdk_reads_what_topo_publishes_as_cloudevents(make_bus: Callable[..., Bus], transport_kind: str) -> None:
    if transport_kind == "memory":
        pytest.skip("not applicable: the SDK reads the messages of a real broker")
    bus = make_bus(envelope="cloudevents")
    runtime = bus.runtime()
    payload = runtime.classes.module.TokenMoved(chain_id=1, token="0xabc", seq=7, note="é")
    with raw_reader(bus, "token.moved", 1) as read:
        sent = runtime.publisher().publish(payload, headers={"traceparent":
                                                             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        assert runtime.publisher().flush(30) == 0
        event, data = read()
    assert data == payload.model_dump_json().encode(), "the data is the payload's JSON, byte for byte"
    assert event.get_specversion() == "1.0" and event.get_id() == str(sent.event_id)
    source = cloudevents_source(bus.topology.name, "indexer")
    assert event.get_source() == source == f"/topo/{bus.topology.name}/indexer"
    assert event.get_type() == "token.moved" and event.get_datacontenttype() == "application/json"
    assert event.get_extension("chainid") == "1" and event.get_time() is not None
    assert event.get_data() == {"chain_id": 1, "token": "0xabc", "seq": 7, "note": "é"}

    # A topo group reads it as the envelope it would have received (same event_id, producer, version).
    handled: list[Any] = []
    runtime.register("gamma", handled.append)
    gamma = runtime.runner("gamma")
    gamma.run(until=lambda: bool(handled) and gamma.in_flight == 0, timeout=60)
    [envelope] = handled
    assert envelope.event_id == sent.event_id and envelope.payload == payload
    assert envelope.metadata.producer == "indexer" and envelope.metadata.version == "1.0"
    assert envelope.timestamp == event.get_time()


def publish_raw(bus: Bus, event: CloudEvent) -> None:
    """Publish an SDK-made event in binary content mode with the broker's own client."""
    topic = bus.topology.event_topic(event.get_type(), int(event.get_extension("chainid")))
    if bus.kind == "kafka":
        message = ce_kafka.to_binary(event, JSONFormat())
        producer = Producer({"bootstrap.servers": bus.env["KAFKA_BOOTSTRAP_SERVERS"]})
        producer.produce(topic.topic, message.value, message.key, headers=list(message.headers.items()))
        assert producer.flush(30) == 0
    elif bus.kind == "rabbitmq":
        message = ce_rabbitmq.to_binary(event, JSONFormat())
        connection = pika.BlockingConnection(pika.URLParameters(bus.env["RABBITMQ_URL"]))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(bus.topology.rabbitmq.exchange, topic.routing_key, message.body,
                                  pika.BasicProperties(headers=message.headers, content_type=message.content_type,
                                                       delivery_mode=2), mandatory=True)
        finally:
            connection.close()
    else:
        message = ce_kafka.to_binary(event, JSONFormat())
        headers = {name: value.decode() for name, value in message.headers.items()}
        bus.shared.open_publisher().send(topic.topic, None, message.value, headers)


def test_a_topo_group_handles_sdk_made_events_once_per_source_and_id(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()  # topo's own envelope for publishing: consumers read both forms anyway
    runtime = bus.runtime()
    data = {"chain_id": 1, "token": "0xdef", "seq": 3}
    first = CloudEvent({"type": "token.moved", "source": "urn:example:orders", "id": "order-42", "chainid": "1",
                        "datacontenttype": "application/json", "partitionkey": "0xdef"}, data)
    other = CloudEvent({**first.get_attributes(), "source": "urn:example:refunds"}, {**data, "seq": 4})
    for event in (first, first, other):  # the first one twice: a redelivery
        publish_raw(bus, event)

    handled: list[Any] = []
    runtime.register("gamma", handled.append)
    gamma = runtime.runner("gamma")
    gamma.run(until=lambda: gamma.handled >= 3 and gamma.in_flight == 0, timeout=60)
    assert sorted(e.payload.seq for e in handled) == [3, 4], "deduplicated on source + id, not on id alone"
    by_seq = {e.payload.seq: e for e in handled}
    assert by_seq[3].event_id == uuid.uuid5(FOREIGN_IDS, "urn:example:orders\norder-42")
    assert by_seq[3].metadata.producer == "urn:example:orders" and by_seq[3].payload.token == "0xdef"
    assert by_seq[4].metadata.producer == "urn:example:refunds"
    assert json.loads(by_seq[3].model_dump_json())["chain_id"] == 1


def test_a_cloudevent_topo_cannot_read_is_refused_naming_why() -> None:
    """What makes a CloudEvent poison (dead-lettered with this message), without a broker."""
    from topologies import document

    from topo.generator.resolve import resolve
    from topo.runtime.cloudevents import CloudEventsReader
    from topo.runtime.transport.base import Delivery

    reader = CloudEventsReader(resolve(document("ce")))
    base = {"ce_id": "1", "ce_source": "urn:x", "ce_type": "token.moved", "ce_specversion": "1.0", "ce_chainid": "1"}

    def refused(headers: dict[str, str], body: bytes = b'{"chain_id": 1}') -> str:
        with pytest.raises(ValueError) as caught:
            reader.envelope(Delivery("t", 0, 0, "t", None, headers, body, 0.0))
        return str(caught.value)

    assert refused({k: v for k, v in base.items() if k != "ce_source"}) == \
        "CloudEvent without the required attribute(s) source"
    assert "specversion '0.3'" in refused({**base, "ce_specversion": "0.3"})
    assert "content type 'text/plain'" in refused({**base, "content-type": "text/plain"})
    assert refused({**base, "ce_type": "nope"}).startswith("CloudEvent type 'nope' is not an event type of topology ce")
    assert "chainid 'x'" in refused({**base, "ce_chainid": "x"})
    # The AMQP 1.0 prefixes read too; without chainid the data's chain_id is used.
    amqp = {"cloudEvents:" + k[3:]: v for k, v in base.items() if k != "ce_chainid"}
    envelope = json.loads(reader.envelope(Delivery("t", 0, 0, "t", None, amqp, b'{"chain_id": 138}', 0.0)))
    assert envelope["chain_id"] == 138 and envelope["metadata"] == {"producer": "urn:x", "version": "1.0"}
