"""The broker resources a topology needs, derived from the resolved model only.

This is the single source of every name, setting and argument that `topo plan` / `topo apply`
compare and create, and that the generated scripts and manifests (`topo.generator.emit.kafka`,
`topo.generator.emit.rabbitmq`) write out. Pure: no IO, no broker client.

Ownership (what `--prune` may delete) is decided here too:

* Kafka topics carry no tags, so ownership is by name: the topology's own plumbing topics,
  `{topology}.{group}.dlq` and `{topology}.{group}.retry.{delay}`, plus every topic the topology
  declares today. Event topics (`{event_type}.{chain_id}`) may be shared by every topology that
  declares the same event, so one that leaves the topology is reported but never deleted.
* RabbitMQ exchanges and queues carry the argument `x-topo-owner: <topology name>`; a binding is
  owned when both of its ends are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from topo.core.model import ConsumerGroup, KafkaTopicSettings, Topology
from topo.core.names import DLQ_MIN_RETENTION_MS, plumbing_topic_settings

OWNER_ARGUMENT = "x-topo-owner"
QUEUE_TYPE = "quorum"
# Quorum queues dead-letter at least once only together with reject-publish overflow.
DEAD_LETTER_STRATEGY = "at-least-once"
OVERFLOW = "reject-publish"
# The consistent-hash exchange reads a binding's routing key as the queue's weight.
HASH_WEIGHT = "1"


class TopicRole(StrEnum):
    EVENT = "event"
    RETRY = "retry"
    DLQ = "dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    role: TopicRole
    event: str | None = None
    chain_id: int | None = None
    group: str | None = None
    delay_seconds: float | None = None

    def owner(self, topology: str) -> dict[str, Any]:
        """Who needs this topic and why (desired-state.json's `owner`)."""
        record: dict[str, Any] = {"topology": topology, "role": self.role.value}
        for key in ("event", "chain_id", "group", "delay_seconds"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return record


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    arguments: Mapping[str, Any]
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any]  # x-queue-type and x-topo-owner included
    role: Literal["work", "wait", "dlq"]
    group: str
    durable: bool = True
    auto_delete: bool = False

    @property
    def queue_type(self) -> str:
        return str(self.arguments.get("x-queue-type", "classic"))


class BindingIdentity:
    """What names a binding on the broker, on the desired and the live side alike."""

    source: str
    destination: str
    destination_type: str
    routing_key: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.source, self.destination_type, self.destination, self.routing_key)

    def describe(self) -> str:
        return f"{self.source} -> {self.destination_type} {self.destination} [{self.routing_key}]"


@dataclass(frozen=True)
class BindingSpec(BindingIdentity):
    source: str
    destination: str
    destination_type: Literal["exchange", "queue"]
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredState:
    topology: str
    topics: tuple[TopicSpec, ...]
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]


# --------------------------------------------------------------------------- Kafka


def retry_topic_settings(topology: Topology, group: ConsumerGroup) -> KafkaTopicSettings:
    settings = group.kafka.retry_topic_settings
    if settings is not None:
        return settings
    # A topology.json compiled before the model carried these settings: derive them the same way.
    unordered = [topology.event(s.event) for s in group.subscriptions if not s.ordered]
    return plumbing_topic_settings(list({e.name: e for e in unordered}.values()), topology.kafka)


def dlq_topic_settings(topology: Topology, group: ConsumerGroup) -> KafkaTopicSettings:
    settings = group.kafka.dlq_topic_settings
    if settings is not None:
        return settings
    events = list({s.event: topology.event(s.event) for s in group.subscriptions}.values())
    return plumbing_topic_settings(events, topology.kafka, DLQ_MIN_RETENTION_MS)


def kafka_topics(topology: Topology) -> tuple[TopicSpec, ...]:
    topics: list[TopicSpec] = []
    for event in topology.events:
        settings = event.kafka
        for topic in event.topics:
            topics.append(TopicSpec(topic.topic, settings.partitions, settings.replication_factor,
                                    dict(settings.configs), TopicRole.EVENT, event=event.name,
                                    chain_id=topic.chain_id))
    for group in topology.groups:
        if group.kafka.retry_topics:
            retry = retry_topic_settings(topology, group)
            for destination in group.kafka.retry_topics:
                topics.append(TopicSpec(destination.name, retry.partitions, retry.replication_factor,
                                        dict(retry.configs), TopicRole.RETRY, group=group.name,
                                        delay_seconds=destination.delay_seconds))
        dlq = dlq_topic_settings(topology, group)
        topics.append(TopicSpec(group.kafka.dlq_topic, dlq.partitions, dlq.replication_factor, dict(dlq.configs),
                                TopicRole.DLQ, group=group.name))
    seen: set[str] = set()
    for spec in topics:
        if spec.name in seen:
            raise ValueError(f"topology {topology.name!r} derives the Kafka topic {spec.name!r} twice; "
                             "change `naming.topic` or the group names so every topic name is unique")
        seen.add(spec.name)
    return tuple(topics)


def _plumbing_pattern(topology: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(topology)}\.[A-Za-z0-9_-]+\.(?:dlq|retry\.[0-9a-z]+)$")


@dataclass(frozen=True)
class TopicOwnership:
    """Which live topics `topo plan` looks at (scope) and which of them `--prune` may delete (owned)."""

    topology: str
    declared: frozenset[str]
    # `{stem}.{chain_id}` is how the event topics are named (the default naming): a topic with a
    # known stem and another chain id looks like one of our events on another chain.
    event_stems: frozenset[str]

    def owned(self, name: str) -> bool:
        return name in self.declared or bool(_plumbing_pattern(self.topology).match(name))

    def in_scope(self, name: str) -> bool:
        if self.owned(name) or name.startswith(f"{self.topology}."):
            return True
        head, _, tail = name.rpartition(".")
        return tail.isdigit() and head in self.event_stems


def topic_ownership(topology: Topology) -> TopicOwnership:
    stems = {t.topic.removesuffix(f".{t.chain_id}") for e in topology.events for t in e.topics
             if t.topic.endswith(f".{t.chain_id}")}
    return TopicOwnership(topology.name, frozenset(t.name for t in kafka_topics(topology)), frozenset(stems))


# --------------------------------------------------------------------------- RabbitMQ


def owner_arguments(topology: Topology) -> dict[str, Any]:
    return {OWNER_ARGUMENT: topology.name}


def work_queue_arguments(group: ConsumerGroup) -> dict[str, Any]:
    """Arguments of a group's work queues, as the runtime must declare them (marker excluded)."""
    plumbing = group.rabbitmq
    arguments: dict[str, Any] = {
        "x-queue-type": QUEUE_TYPE,
        "x-delivery-limit": plumbing.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": plumbing.dlq_queue,
        "x-dead-letter-strategy": DEAD_LETTER_STRATEGY,
        "x-overflow": OVERFLOW,
    }
    if plumbing.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    return dict(sorted(arguments.items()))


def wait_queue_arguments(group: ConsumerGroup, delay_seconds: float) -> dict[str, Any]:
    """A retry wait queue: the queue TTL expires every message after the delay (all share one TTL,
    so the head always expires first) and dead-letters it back to the group exchange."""
    return dict(sorted({
        "x-queue-type": QUEUE_TYPE,
        "x-message-ttl": round(delay_seconds * 1000),
        "x-dead-letter-exchange": group.rabbitmq.exchange,
        "x-dead-letter-strategy": DEAD_LETTER_STRATEGY,
        "x-overflow": OVERFLOW,
    }.items()))


def dlq_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": QUEUE_TYPE}


def rabbit_exchanges(topology: Topology) -> tuple[ExchangeSpec, ...]:
    owner = owner_arguments(topology)
    exchanges = [ExchangeSpec(topology.rabbitmq.exchange, "topic", dict(owner))]
    for group in topology.groups:
        plumbing = group.rabbitmq
        arguments: dict[str, Any] = dict(owner)
        if plumbing.hash_header:
            arguments["hash-header"] = plumbing.hash_header
        exchanges.append(ExchangeSpec(plumbing.exchange, plumbing.exchange_type, dict(sorted(arguments.items()))))
    return tuple(exchanges)


def rabbit_queues(topology: Topology) -> tuple[QueueSpec, ...]:
    owner = owner_arguments(topology)
    queues: list[QueueSpec] = []
    for group in topology.groups:
        plumbing = group.rabbitmq
        work = {**work_queue_arguments(group), **owner}
        queues.extend(QueueSpec(name, dict(sorted(work.items())), "work", group.name) for name in plumbing.queues)
        for destination in plumbing.retry_queues:
            wait = {**wait_queue_arguments(group, destination.delay_seconds), **owner}
            queues.append(QueueSpec(destination.name, dict(sorted(wait.items())), "wait", group.name))
        queues.append(QueueSpec(plumbing.dlq_queue, dict(sorted({**dlq_queue_arguments(), **owner}.items())),
                                "dlq", group.name))
    return tuple(queues)


def rabbit_bindings(topology: Topology) -> tuple[BindingSpec, ...]:
    bindings: list[BindingSpec] = []
    for group in topology.groups:
        plumbing = group.rabbitmq
        routing_keys = dict.fromkeys(key for s in group.subscriptions for key in s.routing_keys)
        bindings.extend(BindingSpec(topology.rabbitmq.exchange, plumbing.exchange, "exchange", key)
                        for key in routing_keys)
        weight = HASH_WEIGHT if plumbing.exchange_type == "x-consistent-hash" else ""
        bindings.extend(BindingSpec(plumbing.exchange, queue, "queue", weight) for queue in plumbing.queues)
    return tuple(bindings)


def owned_by(arguments: Mapping[str, Any] | None, topology: str) -> bool:
    return bool(arguments) and (arguments or {}).get(OWNER_ARGUMENT) == topology


def without_marker(arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (arguments or {}).items() if key != OWNER_ARGUMENT}


def rabbit_in_scope(topology: Topology, name: str, arguments: Mapping[str, Any] | None) -> bool:
    """Exchanges and queues `topo plan` reports on: ours by marker or under the topology's names."""
    return (owned_by(arguments, topology.name) or name == topology.rabbitmq.exchange
            or name.startswith(f"{topology.name}."))


def desired_state(topology: Topology) -> DesiredState:
    return DesiredState(topology.name, kafka_topics(topology), rabbit_exchanges(topology), rabbit_queues(topology),
                        rabbit_bindings(topology))


# --------------------------------------------------------------------------- RabbitMQ definitions


def definitions(topology: Topology, vhost: str = "/", *, exchanges: tuple[ExchangeSpec, ...] | None = None,
                queues: tuple[QueueSpec, ...] | None = None,
                bindings: tuple[BindingSpec, ...] | None = None) -> dict[str, Any]:
    """A definitions document (`rabbitmqctl import_definitions`, `POST /api/definitions[/{vhost}]`).

    Without the keyword arguments: everything the topology needs; with them, just those resources.
    """
    exchanges = rabbit_exchanges(topology) if exchanges is None else exchanges
    queues = rabbit_queues(topology) if queues is None else queues
    bindings = rabbit_bindings(topology) if bindings is None else bindings
    return {
        "exchanges": [{"name": e.name, "vhost": vhost, "type": e.type, "durable": e.durable,
                       "auto_delete": e.auto_delete, "internal": e.internal, "arguments": dict(e.arguments)}
                      for e in exchanges],
        "queues": [{"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": q.auto_delete,
                    "arguments": dict(q.arguments)} for q in queues],
        "bindings": [{"source": b.source, "vhost": vhost, "destination": b.destination,
                      "destination_type": b.destination_type, "routing_key": b.routing_key,
                      "arguments": dict(b.arguments)} for b in bindings],
    }
