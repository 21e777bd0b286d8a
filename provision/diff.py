"""Desired state versus live state -> plan changes. Pure: no IO.

Broker defaults never show as a difference: a desired topic config is compared with the
topic's effective value (whatever its source), and only configs set on the topic itself count
as drift. RabbitMQ arguments are compared without the ownership marker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from topo.core.desired import (
    DesiredState,
    TopicOwnership,
    TopicSpec,
    owned_by,
    rabbit_in_scope,
    without_marker,
)
from topo.core.model import Topology
from topo.provision.kafka import LiveTopic
from topo.provision.plan import Action, Broker, Change, Difference
from topo.provision.rabbitmq import LiveBinding, RabbitLive

# Configs whose value is a list: "compact,delete" equals "delete,compact".
LIST_CONFIGS = frozenset({"cleanup.policy"})


def _same_config(key: str, current: str | None, desired: str) -> bool:
    if current is None:
        return False
    if key in LIST_CONFIGS:
        return {v.strip() for v in current.split(",")} == {v.strip() for v in desired.split(",")}
    return current.strip() == desired.strip()


def _settings(spec: TopicSpec) -> str:
    configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
    return f"{spec.partitions} partitions, replication factor {spec.replication_factor}" + (
        f", {configs}" if configs else "")


def diff_kafka(desired: Sequence[TopicSpec], live: Mapping[str, LiveTopic], ownership: TopicOwnership,
               prune: bool) -> list[Change]:
    changes: list[Change] = []
    wanted = {spec.name: spec for spec in desired}
    for spec in desired:
        topic = live.get(spec.name)
        if topic is None:
            changes.append(Change(Broker.KAFKA, Action.CREATE, "topic", spec.name,
                                  f"missing on the broker: create with {_settings(spec)}", subject=spec))
            continue
        updates: list[Difference] = []
        if spec.partitions > topic.partitions:
            updates.append(Difference("partitions", topic.partitions, spec.partitions))
        elif spec.partitions < topic.partitions:
            changes.append(Change(
                Broker.KAFKA, Action.IMPOSSIBLE, "topic", spec.name,
                f"partitions cannot shrink ({topic.partitions} -> {spec.partitions})",
                differences=(Difference("partitions", topic.partitions, spec.partitions),),
                procedure=(f"create a new topic with {spec.partitions} partitions, move producers and then "
                           f"consumers to it and delete the old one; or keep partitions: {topic.partitions} "
                           "in topology.yaml"),
                subject=spec))
        if spec.replication_factor != topic.replication_factor:
            changes.append(Change(
                Broker.KAFKA, Action.IMPOSSIBLE, "topic", spec.name,
                f"replication factor differs ({topic.replication_factor} -> {spec.replication_factor})",
                differences=(Difference("replication_factor", topic.replication_factor, spec.replication_factor),),
                procedure=("replicas move only by reassignment: use kafka-reassign-partitions.sh (or Cruise "
                           f"Control) to reach {spec.replication_factor} replicas, or set replication_factor: "
                           f"{topic.replication_factor} in topology.yaml"),
                subject=spec))
        for key, value in sorted(spec.configs.items()):
            current = topic.configs.get(key)
            if not _same_config(key, current, value):
                updates.append(Difference(f"config.{key}", current, value))
        if updates:
            changes.append(Change(Broker.KAFKA, Action.UPDATE, "topic", spec.name,
                                  "differs from the topology: changed in place", differences=tuple(updates),
                                  subject=spec))
        extra = sorted(key for key in topic.dynamic if key not in spec.configs)
        if extra:
            changes.append(Change(
                Broker.KAFKA, Action.DELETE if prune else Action.DRIFT, "topic-config", spec.name,
                "configs set on the topic but not in the topology" + (
                    ": --prune removes them (the broker default applies again)" if prune
                    else "; `topo apply --prune` removes them"),
                differences=tuple(Difference(f"config.{key}", topic.configs.get(key), None) for key in extra),
                subject=spec))
    for name in sorted(set(live) - set(wanted)):
        owned = ownership.owned(name)
        if owned and prune:
            changes.append(Change(Broker.KAFKA, Action.DELETE, "topic", name,
                                  f"owned by topology {ownership.topology} and no longer in it: --prune deletes it "
                                  "with its messages", subject=live[name]))
        else:
            reason = ("owned by this topology and not in it; `topo apply --prune` deletes it" if owned else
                      f"not owned by topology {ownership.topology} (event topics may be shared); never deleted "
                      "by topo: delete it yourself if it is unused")
            changes.append(Change(Broker.KAFKA, Action.DRIFT, "topic", name, f"on the broker only: {reason}",
                                  owned=owned, subject=live[name]))
    return changes


def _arguments_diff(current: Mapping[str, Any], desired: Mapping[str, Any]) -> tuple[Difference, ...]:
    current, desired = without_marker(current), without_marker(desired)
    return tuple(Difference(f"argument.{key}", current.get(key), desired.get(key))
                 for key in sorted(set(current) | set(desired)) if current.get(key) != desired.get(key))


def diff_rabbitmq(topology: Topology, desired: DesiredState, live: RabbitLive, prune: bool) -> list[Change]:
    changes: list[Change] = []
    name = topology.name

    for exchange in desired.exchanges:
        current = live.exchanges.get(exchange.name)
        if current is None:
            changes.append(Change(Broker.RABBITMQ, Action.CREATE, "exchange", exchange.name,
                                  f"missing on the broker: create a durable {exchange.type} exchange",
                                  subject=exchange))
            continue
        differences = list(_arguments_diff(current.arguments, exchange.arguments))
        for attribute in ("type", "durable", "auto_delete", "internal"):
            if getattr(current, attribute) != getattr(exchange, attribute):
                differences.append(Difference(attribute, getattr(current, attribute), getattr(exchange, attribute)))
        if differences:
            changes.append(Change(
                Broker.RABBITMQ, Action.IMPOSSIBLE, "exchange", exchange.name,
                "exchange type, flags and arguments cannot change once declared",
                differences=tuple(differences),
                procedure=(f"delete exchange {exchange.name} (rabbitmqadmin delete exchange name={exchange.name}) "
                           "and run `topo apply` again: exchanges hold no messages, but publishes are unroutable "
                           "until it is back, and its bindings are recreated by apply"),
                subject=exchange))

    for queue in desired.queues:
        current_queue = live.queues.get(queue.name)
        if current_queue is None:
            changes.append(Change(Broker.RABBITMQ, Action.CREATE, "queue", queue.name,
                                  f"missing on the broker: create a {queue.queue_type} queue ({queue.role})",
                                  subject=queue))
            continue
        differences = list(_arguments_diff(current_queue.arguments, queue.arguments))
        for attribute in ("durable", "auto_delete"):
            if getattr(current_queue, attribute) != getattr(queue, attribute):
                differences.append(Difference(attribute, getattr(current_queue, attribute),
                                              getattr(queue, attribute)))
        if differences:
            changes.append(Change(
                Broker.RABBITMQ, Action.IMPOSSIBLE, "queue", queue.name,
                "queue arguments are immutable once the queue exists",
                differences=tuple(differences),
                procedure=(f"stop its consumers, let queue {queue.name} drain ({current_queue.messages} message(s) "
                           f"now), delete it (rabbitmqadmin delete queue name={queue.name}; this drops what it "
                           "still holds) and run `topo apply` again; or keep the old setting in topology.yaml"),
                subject=queue))

    wanted_bindings = {binding.key: binding for binding in desired.bindings}
    live_bindings = {binding.key: binding for binding in live.bindings}
    for key, binding in wanted_bindings.items():
        if key not in live_bindings:
            changes.append(Change(Broker.RABBITMQ, Action.CREATE, "binding", binding.describe(),
                                  "missing on the broker", subject=binding))

    desired_exchanges = {e.name for e in desired.exchanges}
    desired_queues = {q.name for q in desired.queues}
    for exchange_name, current in sorted(live.exchanges.items()):
        if exchange_name in desired_exchanges or not rabbit_in_scope(topology, exchange_name, current.arguments):
            continue
        changes.append(_extra(Broker.RABBITMQ, "exchange", exchange_name, owned_by(current.arguments, name), prune,
                              name, current))
    for queue_name, live_queue in sorted(live.queues.items()):
        if queue_name in desired_queues or not rabbit_in_scope(topology, queue_name, live_queue.arguments):
            continue
        extra = _extra(Broker.RABBITMQ, "queue", queue_name, owned_by(live_queue.arguments, name), prune, name,
                       live_queue)
        if live_queue.messages and extra.action is Action.DELETE:
            extra = Change(extra.broker, extra.action, extra.kind, extra.name,
                           extra.reason + f" (holds {live_queue.messages} message(s): deleted only once empty)",
                           owned=True, subject=live_queue)
        changes.append(extra)

    ours = {n for n, e in live.exchanges.items() if rabbit_in_scope(topology, n, e.arguments)} | desired_exchanges
    ours |= {n for n, q in live.queues.items() if rabbit_in_scope(topology, n, q.arguments)} | desired_queues
    for key, live_binding in sorted(live_bindings.items()):
        if key in wanted_bindings or not (live_binding.source in ours or live_binding.destination in ours):
            continue
        changes.append(_extra(Broker.RABBITMQ, "binding", live_binding.describe(),
                              _binding_owned(live_binding, live, name), prune, name, live_binding))
    return changes


def _binding_owned(binding: LiveBinding, live: RabbitLive, topology: str) -> bool:
    def end_owned(resource: str, kind: str) -> bool:
        found = live.exchanges.get(resource) if kind == "exchange" else live.queues.get(resource)
        return found is not None and owned_by(found.arguments, topology)

    return end_owned(binding.source, "exchange") and end_owned(binding.destination, binding.destination_type)


def _extra(broker: Broker, kind: str, name: str, owned: bool, prune: bool, topology: str, subject: Any) -> Change:
    if owned and prune:
        return Change(broker, Action.DELETE, kind, name,
                      f"owned by topology {topology} and no longer in it: --prune deletes it", subject=subject)
    reason = (f"owned by topology {topology} and not in it; `topo apply --prune` deletes it" if owned
              else f"not owned by topology {topology} (no x-topo-owner: {topology}); never deleted by topo")
    return Change(broker, Action.DRIFT, kind, name, f"on the broker only: {reason}", owned=owned, subject=subject)
