"""Publishing to Kafka: an idempotent producer with Java-compatible partitioning.

`enable.idempotence`, `acks=all`, the `murmur2_random` partitioner, batching for throughput
(`linger.ms` 5, large batches), delivery reports through callbacks served by `poll`/`flush`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from topo.core import headers as H
from topo.core.model import ConsumerGroup, EventTopic
from topo.runtime.transport.base import (
    DeliveryCallback,
    DeliveryReport,
    PublisherTransport,
    TransportError,
    replay_topic,
)
from topo.runtime.transport.kafka.config import PRODUCER_TUNING, encode_headers

log = logging.getLogger("topo.runtime.kafka")


def report_callback(destination: str, key: str, callback: DeliveryCallback) -> Callable[[Any, Message], None]:
    def report(error: KafkaError | None, message: Message) -> None:
        if error is None:
            callback(DeliveryReport(destination, key, None, message.partition(), message.offset()))
        else:
            callback(DeliveryReport(destination, key, error.str()))

    return report


class KafkaPublisher(PublisherTransport):
    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer({**config, **PRODUCER_TUNING})

    def publish(self, topic: EventTopic, key: str, body: bytes, headers: Mapping[str, str] | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        self.send(topic.topic, key, body, headers, on_delivery)

    def send(self, destination: str, key: str | None, body: bytes, headers: Mapping[str, str] | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        callback = None if on_delivery is None else report_callback(destination, key or "", on_delivery)
        encoded = None if key is None else key.encode()
        for _ in range(100):
            try:
                self.producer.produce(destination, body, encoded, headers=encode_headers(headers) if headers else None,
                                      on_delivery=callback)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self.producer.poll(0.1)
            except KafkaException as error:
                raise TransportError(f"kafka: cannot produce to {destination}: {error}") from None
        else:
            raise TransportError(f"kafka: local producer queue stayed full for 10s producing to {destination}")
        self.producer.poll(0)

    def redeliver(self, group: ConsumerGroup, original: str, key: str | None, body: bytes,
                  headers: Mapping[str, str], on_delivery: DeliveryCallback | None = None) -> None:
        self.send(replay_topic(group), key, body, {**headers, H.ORIGINAL_TOPIC: original}, on_delivery)

    def poll(self, timeout: float = 0.0) -> int:
        return int(self.producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("kafka: %d messages were not confirmed before close", remaining)
