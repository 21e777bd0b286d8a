"""Broker transports behind one interface (`base`); `create` picks one by kind.

Implementations are imported only when used, so running on Kafka never imports pika.
"""

from __future__ import annotations

import importlib
from typing import Any

from topo.core.model import Topology
from topo.runtime.transport.base import Transport

# kind -> "module:class" of a Transport subclass
TRANSPORTS: dict[str, str] = {
    "kafka": "topo.runtime.transport.kafka:KafkaTransport",
    "rabbitmq": "topo.runtime.transport.rabbitmq:RabbitMQTransport",
    "memory": "topo.runtime.transport.memory:MemoryTransport",
}


def transport_class(kind: str) -> type[Transport]:
    target = TRANSPORTS.get(kind)
    if target is None:
        raise ValueError(f"unknown broker {kind!r}; choose one of: {', '.join(sorted(TRANSPORTS))}")
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise TypeError(f"{target} is not a Transport")
    return cls


def create(kind: str, topology: Topology, **options: Any) -> Transport:
    """A transport of `kind` ("kafka", "rabbitmq", "memory") for `topology`."""
    return transport_class(kind)(topology, **options)
