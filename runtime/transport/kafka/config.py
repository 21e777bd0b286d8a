"""librdkafka settings for the transport's clients, and message <-> `Delivery` conversion."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message

from topo.core.client_logs import KafkaClientLog
from topo.core.connect import kafka_config
from topo.core.model import KafkaSettings
from topo.runtime.transport.base import Delivery

# librdkafka logs through Python logging (never raw `%3|...|FAIL|` lines on stderr).
KAFKA_CLIENT_LOG = KafkaClientLog()

PRODUCER_TUNING = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",  # what the Java client does: every client maps a key alike
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "batch.size": 1048576,
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 1048576,
}
KeyedHeaders = list[tuple[str, str | bytes | None]]


def client_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """The core's settings for every Kafka client (bootstrap servers, SASL, TLS files from
    KAFKA_SSL_*; `${VAR}` references expanded now), named `client_id` for the broker's logs; the
    client logs through `KAFKA_CLIENT_LOG` (topo.core.client_logs)."""
    return {**kafka_config(settings), "client.id": client_id, "logger": KAFKA_CLIENT_LOG}


def decode_headers(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {name: value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
            for name, value in pairs}


def encode_headers(headers: Mapping[str, str]) -> KeyedHeaders:
    return [(name, value.encode()) for name, value in headers.items()]


def to_delivery(message: Message) -> Delivery:
    return deliveries_of([message])[0]


def _key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


def _header_texts(raw: Any) -> dict[str, str]:
    return decode_headers(raw) if raw else {}


_DECODE = operator.methodcaller("decode", "utf-8", "replace")
_MILLISECONDS = operator.itemgetter(1)


def deliveries_of(messages: list[Message]) -> list[Delivery]:
    """`to_delivery` for a batch of messages without errors, field by field through `map`: the
    common case (every message keyed, no headers) runs no Python code per message but
    `Delivery.__init__`."""
    count = len(messages)
    topics = list(map(Message.topic, messages))
    keys = list(map(Message.key, messages))
    texts = map(_DECODE, keys) if None not in keys else map(_key_text, keys)
    raw_headers = list(map(Message.headers, messages))
    headers = map(_header_texts, raw_headers) if any(raw_headers) else map(dict, itertools.repeat((), count))
    values = list(map(Message.value, messages))
    if None in values:  # a tombstone: poison for the core, with an empty body
        values = [value or b"" for value in values]
    seconds = map(operator.truediv, map(_MILLISECONDS, map(Message.timestamp, messages)), itertools.repeat(1000.0))
    return list(map(Delivery, topics, map(Message.partition, messages), map(Message.offset, messages), topics,
                    texts, headers, values, seconds))
