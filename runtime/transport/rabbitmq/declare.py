"""Declare a topology's RabbitMQ plumbing over AMQP, from the provisioning's desired state.

`topo apply` creates the same objects through the management API; both take every name and
argument from `topo.core.desired` (`rabbit_exchanges`, `rabbit_queues`, `rabbit_bindings`),
so a queue declared here is equivalent to one `topo apply` made and neither side gets a 406
PRECONDITION_FAILED from the other. This AMQP path needs no management plugin: tests, the
conformance suite and `transport.provision` use it.

What the transport relies on (see docs/rabbitmq.md): work queues are quorum queues that
dead-letter to the group's DLQ (delivery limit reached) through the default exchange; wait queues
expire every message after the queue TTL (= the retry delay) and dead-letter it back to the group
exchange, which re-hashes it on its `x-topo-key` header into the same work queue.
"""

from __future__ import annotations

from typing import Any

from topo.core.desired import DesiredState, desired_state
from topo.core.model import Topology


def declare(channel: Any, topology: Topology) -> DesiredState:
    """Declare every exchange, queue and binding of `topology` on a pika BlockingChannel
    (idempotent: re-declaring an equivalent object is a no-op)."""
    state = desired_state(topology)
    for exchange in state.exchanges:
        channel.exchange_declare(exchange=exchange.name, exchange_type=exchange.type, durable=exchange.durable,
                                 auto_delete=exchange.auto_delete, internal=exchange.internal,
                                 arguments=dict(exchange.arguments) or None)
    for queue in state.queues:
        channel.queue_declare(queue=queue.name, durable=queue.durable, auto_delete=queue.auto_delete,
                              arguments=dict(queue.arguments))
    for binding in state.bindings:
        if binding.destination_type == "exchange":
            channel.exchange_bind(destination=binding.destination, source=binding.source,
                                  routing_key=binding.routing_key, arguments=dict(binding.arguments) or None)
        else:
            channel.queue_bind(queue=binding.destination, exchange=binding.source, routing_key=binding.routing_key,
                               arguments=dict(binding.arguments) or None)
    return state
