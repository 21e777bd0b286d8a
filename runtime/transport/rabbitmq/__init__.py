"""RabbitMQ transport (pika): the broker side of the runtime on RabbitMQ 3.10+.

Objects it expects (declared by `topo apply`, or by `declare.declare` in tests): the topology's
topic exchange; per group an exchange (consistent-hash on the `x-topo-key` header, or fanout)
bound to it with the group's routing keys, quorum work queues `{topology}.{group}.{i}`, TTL wait
queues per retry delay dead-lettering back to the group exchange, and a DLQ.

One module per unit:

* `connection`: pika parameters from `topo.core.connect` (amqps with RABBITMQ_SSL_*), errors;
* `messages`: AMQP properties and headers <-> `Delivery`;
* `publisher`: confirmed publishing on an I/O thread of its own;
* `consumer`: a member of a consumer group, served from `poll()` on the consume-loop thread;
* `handover`: giving an ordered group's queue to another member without reordering;
* `members`: which queues each member of an ordered group consumes;
* `compat`: the one call into pika's internals (checked by tests/runtime/test_pika_compat.py);
* `tail`, `dead_letters`: `topo tail`, `topo dlq list|replay`;
* `declare`: the topology's objects over AMQP, from the core's desired state;
* `transport`: the `Transport` that opens all of them, and `provision`.
"""

from topo.runtime.transport.rabbitmq.consumer import RabbitMQConsumer
from topo.runtime.transport.rabbitmq.dead_letters import RabbitMQDeadLetters
from topo.runtime.transport.rabbitmq.messages import RabbitHandle, message_properties
from topo.runtime.transport.rabbitmq.publisher import RabbitMQPublisher
from topo.runtime.transport.rabbitmq.tail import RabbitMQTail
from topo.runtime.transport.rabbitmq.transport import RabbitMQTransport, provision

__all__ = [
    "RabbitHandle",
    "RabbitMQConsumer",
    "RabbitMQDeadLetters",
    "RabbitMQPublisher",
    "RabbitMQTail",
    "RabbitMQTransport",
    "message_properties",
    "provision",
]
