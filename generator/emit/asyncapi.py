"""generated/asyncapi/<topology>.yaml: the topology as an AsyncAPI 3.0 document.

Self-contained (every `$ref` points inside the document) so any AsyncAPI tool reads it alone:
a server per broker (`asyncapi_servers`), a channel per Kafka topic (event, retry and dead-letter
topics, with partitions, replicas and topic configuration) and per RabbitMQ routing key and queue,
`send` operations per producer and per group's retry and dead-letter path, `receive` operations
per consumer group (with its Kafka group id), one message per event type whose payload is the
event's JSON Schema (`schemas` emitter) and whose headers are topo's envelope headers
(`asyncapi_messages`). Topics, queues and their settings come from `topo.core.desired`, the same
list `topo apply` creates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from topo.core.desired import QueueSpec, TopicRole, TopicSpec, kafka_topics, rabbit_queues, without_marker
from topo.core.model import ConsumerGroup, Delivery, Topology
from topo.generator.emit.asyncapi_messages import (
    AMQP_BINDING,
    CONTENT_TYPE,
    KAFKA_BINDING,
    components,
    message_ref,
)
from topo.generator.emit.asyncapi_servers import KAFKA_SERVER, RABBITMQ_SERVER, servers
from topo.generator.yamlout import dump

ASYNCAPI_VERSION = "3.0.0"
KAFKA_PREFIX = "kafka."
AMQP_ROUTING_PREFIX = "amqp."
AMQP_QUEUE_PREFIX = "amqp-queue."
PUBLISH_TRAIT = "amqp.publish"
# int-valued Kafka topic configs the AsyncAPI Kafka binding types as integers.
INTEGER_CONFIGS = frozenset({"retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes"})
BOOLEAN_CONFIGS = frozenset({"confluent.key.schema.validation", "confluent.value.schema.validation"})


def path(topology: Topology) -> str:
    return f"asyncapi/{topology.name}.yaml"


def pointer(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def subscribed(group: ConsumerGroup, *, unordered_only: bool = False) -> tuple[str, ...]:
    """Event types a group reads (those retried through its retry path when `unordered_only`)."""
    return tuple(dict.fromkeys(s.event for s in group.subscriptions if not (unordered_only and s.ordered)))


def group_trait(group: ConsumerGroup) -> str:
    return f"group.{group.name}"


def producer_trait(producer: str) -> str:
    return f"producer.{producer}"


@dataclass
class Builder:
    """Channels and operations of one document. Parts that repeat (a channel's servers and messages, an
    event's bindings, an operation's traits) are one shared object each, which the YAML writer renders
    once: a topology with tens of thousands of topics stays quick to generate."""

    channels: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, Any] = field(default_factory=dict)
    _shared: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def shared(self, key: tuple[Any, ...], make: Any) -> Any:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def channel(self, channel_id: str, address: str, server: str, events: tuple[str, ...], description: str,
                bindings: dict[str, Any]) -> None:
        self.channels[channel_id] = {
            "address": address,
            "description": description,
            "servers": self.shared(("server", server), lambda: [{"$ref": f"#/servers/{server}"}]),
            "messages": self.shared(("messages", events), lambda: {e: message_ref(e) for e in events}),
            "bindings": bindings,
        }

    def operation(self, party: str, action: str, channel_id: str, *traits: str) -> None:
        """An operation; who performs it and how (description, bindings) are traits shared by all of theirs."""
        self.operations[f"{party}.{action}.{channel_id}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{pointer(channel_id)}"},
            "traits": self.shared(("traits", traits),
                                  lambda: [{"$ref": f"#/components/operationTraits/{name}"} for name in traits]),
        }


# --------------------------------------------------------------------------- Kafka


def topic_configuration(configs: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for key, value in sorted(configs.items()):
        if key == "cleanup.policy":
            typed[key] = [policy.strip() for policy in value.split(",") if policy.strip()]
        elif key in INTEGER_CONFIGS and value.lstrip("-").isdigit():
            typed[key] = int(value)
        elif key in BOOLEAN_CONFIGS and value in ("true", "false"):
            typed[key] = value == "true"
        else:
            typed[key] = value
    return typed


def kafka_channel_binding(spec: TopicSpec) -> dict[str, Any]:
    """The topic is the channel's address, so the binding leaves `topic` out."""
    binding: dict[str, Any] = {"partitions": spec.partitions, "replicas": spec.replication_factor}
    if spec.configs:
        binding["topicConfiguration"] = topic_configuration(dict(spec.configs))
    binding["bindingVersion"] = KAFKA_BINDING
    return {"kafka": binding}


def delivery_note(group: ConsumerGroup) -> str:
    if group.delivery is Delivery.EXACTLY_ONCE:
        return "exactly once on Kafka (transactions), at least once with deduplication on RabbitMQ"
    return "at least once, duplicates dropped by event_id"


def add_kafka(topology: Topology, builder: Builder) -> None:
    events = {event.name: event for event in topology.events}
    groups = {group.name: group for group in topology.groups}
    for spec in kafka_topics(topology):
        settings = (spec.partitions, spec.replication_factor, tuple(sorted(spec.configs.items())))
        binding = builder.shared(("kafka", *settings), lambda spec=spec: kafka_channel_binding(spec))
        channel_id = KAFKA_PREFIX + spec.name
        if spec.role is TopicRole.EVENT:
            assert spec.event is not None
            event = events[spec.event]
            chain = next(t for t in event.topics if t.chain_id == spec.chain_id)
            builder.channel(channel_id, spec.name, KAFKA_SERVER, (event.name,),
                            f"{event.name} on chain {chain.chain_name} ({chain.chain_id}).", binding)
            for producer in event.producers:
                builder.operation(producer, "send", channel_id, producer_trait(producer))
            continue
        assert spec.group is not None
        group = groups[spec.group]
        if spec.role is TopicRole.RETRY:
            builder.channel(channel_id, spec.name, KAFKA_SERVER, subscribed(group, unordered_only=True),
                            f"Retry copies of consumer group `{group.name}`, due {spec.delay_seconds:g} s after a "
                            "failure.", binding)
            builder.operation(group.name, "send", channel_id, group_trait(group))
            builder.operation(group.name, "receive", channel_id, group_trait(group), group_trait(group) + ".kafka")
        else:
            builder.channel(channel_id, spec.name, KAFKA_SERVER, subscribed(group),
                            f"Dead letters of consumer group `{group.name}`: events that failed every retry or "
                            "could not be read (`topo dlq list` / `replay`).", binding)
            builder.operation(group.name, "send", channel_id, group_trait(group))
    for group in topology.groups:
        for topic in dict.fromkeys(t for s in group.subscriptions for t in s.topics):
            builder.operation(group.name, "receive", KAFKA_PREFIX + topic, group_trait(group),
                              group_trait(group) + ".kafka")


# --------------------------------------------------------------------------- RabbitMQ


def queue_description(topology: Topology, group: ConsumerGroup, spec: QueueSpec) -> str:
    plumbing = group.rabbitmq
    if spec.role == "work":
        hashing = (f"an {plumbing.exchange_type} exchange hashing on the header `{plumbing.hash_header}`"
                   if plumbing.hash_header else f"a {plumbing.exchange_type} exchange")
        return (f"Work queue of consumer group `{group.name}`, bound to the group's exchange `{plumbing.exchange}` "
                f"({hashing}), itself bound to `{topology.rabbitmq.exchange}` with the group's routing keys.")
    if spec.role == "wait":
        return (f"Retry wait queue of consumer group `{group.name}`: its TTL dead-letters each copy back to "
                f"`{plumbing.exchange}` when due.")
    return f"Dead letters of consumer group `{group.name}` (`topo dlq list` / `replay`)."


def amqp_queue_binding(spec: QueueSpec) -> dict[str, Any]:
    return {"amqp": {
        "is": "queue",
        "queue": {"name": spec.name, "durable": spec.durable, "exclusive": False, "autoDelete": spec.auto_delete},
        "x-arguments": without_marker(spec.arguments),
        "bindingVersion": AMQP_BINDING,
    }}


def add_rabbitmq(topology: Topology, builder: Builder) -> None:
    exchange = topology.rabbitmq.exchange
    routing_binding = {"amqp": {
        "is": "routingKey",
        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False},
        "bindingVersion": AMQP_BINDING,
    }}
    for event in topology.events:
        for topic in event.topics:
            channel_id = AMQP_ROUTING_PREFIX + topic.routing_key
            builder.channel(channel_id, topic.routing_key, RABBITMQ_SERVER, (event.name,),
                            f"{event.name} on chain {topic.chain_name} ({topic.chain_id}), published to "
                            f"`{exchange}`.", routing_binding)
            for producer in event.producers:
                builder.operation(producer, "send", channel_id, producer_trait(producer), PUBLISH_TRAIT)
    groups = {group.name: group for group in topology.groups}
    for spec in rabbit_queues(topology):
        group = groups[spec.group]
        channel_id = AMQP_QUEUE_PREFIX + spec.name
        builder.channel(channel_id, spec.name, RABBITMQ_SERVER, subscribed(group, unordered_only=spec.role == "wait"),
                        queue_description(topology, group, spec), amqp_queue_binding(spec))
        if spec.role == "work":
            builder.operation(group.name, "receive", channel_id, group_trait(group), group_trait(group) + ".amqp")
        else:
            builder.operation(group.name, "send", channel_id, group_trait(group), PUBLISH_TRAIT)


def operation_traits(topology: Topology) -> dict[str, Any]:
    """Who performs the operations (groups, producers) and with which broker settings."""
    traits: dict[str, Any] = {}
    for producer in topology.producers:
        events = [e.name for e in topology.events if producer in e.producers]
        traits[producer_trait(producer)] = {"description": f"Producer `{producer}` publishes {', '.join(events)}."}
    traits[PUBLISH_TRAIT] = {
        "description": "Persistent, mandatory messages with publisher confirms.",
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "timestamp": True,
                              "bindingVersion": AMQP_BINDING}},
    }
    for group in topology.groups:
        about = f"{group.description} " if group.description else ""
        traits[group_trait(group)] = {"description": (
            f"Consumer group `{group.name}`. {about}Delivery: {delivery_note(group)}; a failed event is retried "
            f"{group.retry.max_retries} times, then dead-lettered.")}
        traits[group_trait(group) + ".kafka"] = {"bindings": {"kafka": {
            "groupId": {"type": "string", "enum": [group.kafka.group_id]}, "bindingVersion": KAFKA_BINDING}}}
        traits[group_trait(group) + ".amqp"] = {"bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}}}
    return traits


# --------------------------------------------------------------------------- document


def document(topology: Topology) -> dict[str, Any]:
    server_objects, security_schemes = servers(topology)
    builder = Builder()
    add_kafka(topology, builder)
    add_rabbitmq(topology, builder)
    info: dict[str, Any] = {"title": topology.name, "version": str(topology.version)}
    if topology.description:
        info["description"] = topology.description
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": CONTENT_TYPE,
        "servers": server_objects,
        "channels": builder.channels,
        "operations": builder.operations,
        "components": {**components(topology, security_schemes), "operationTraits": operation_traits(topology)},
    }


def text(value: dict[str, Any]) -> str:
    return "# Generated by topo from the topology; do not edit. AsyncAPI 3.0 (docs/asyncapi.md).\n" + dump(value)


def emit(topology: Topology) -> dict[str, str]:
    return {path(topology): text(document(topology))}
