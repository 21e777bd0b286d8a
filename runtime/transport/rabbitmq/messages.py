"""AMQP messages as the transport writes and reads them: properties, headers and `Delivery`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika

from topo.core import headers as hdr
from topo.runtime.transport.base import Delivery, Headers, TransportError

CONTENT_TYPE = "application/json"
PERSISTENT = 2  # AMQP delivery_mode
# Copied into the AMQP message_id when the core sets it (see docs/rabbitmq.md).
EVENT_ID_HEADER = "x-topo-event-id"
# Broker-owned dead-lettering headers: the broker rewrites them, copies must not carry stale ones.
BROKER_DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                        "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")


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


def channel_of(delivery: Delivery) -> Any:
    """The channel `delivery` arrived on (and must be settled on)."""
    handle = delivery.handle
    if not isinstance(handle, RabbitHandle):
        raise TransportError(f"delivery {delivery.source}[{delivery.partition}]@{delivery.offset} was not "
                             "produced by the RabbitMQ transport")
    return handle.channel
