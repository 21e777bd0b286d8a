"""Event-level changes: events added, removed or renamed, their chains, topics, routing keys,
key field, ordering and Kafka topic settings."""

from __future__ import annotations

from topo.core.model import EventType, KafkaTopicSettings, Topology
from topo.generator.compat.payload import payload_changes
from topo.generator.compat.rules import Change, Level, Side

SAFE, CARE, BREAKING = Level.SAFE, Level.CARE, Level.BREAKING
RETENTION = "retention.ms"
CLEANUP = "cleanup.policy"


def shape(event: EventType) -> tuple[tuple[str, str, bool], ...]:
    """What identifies an event's payload for rename detection: its fields' names, types, presence."""
    return tuple(sorted((f.name, f.type.value, f.required) for f in event.payload))


def broker(rule: str, level: Level, event: str, key: str | None, message: str) -> Change:
    path = ("events", event) if key is None else ("events", event, key)
    return Change(rule, Side.BROKERS, level, f"event {event}", path, message, event=event)


def retention_change(event: str, old: str, new: str) -> Change:
    before, after = int(old), int(new)
    unlimited_before, unlimited_after = before < 0, after < 0
    reduced = (unlimited_before and not unlimited_after) or (not unlimited_after and after < before)
    return broker("retention-reduced" if reduced else "retention-increased", CARE if reduced else SAFE, event,
                  "retention", f"Kafka {RETENTION} {old} -> {new}")


def kafka_changes(event: str, old: KafkaTopicSettings, new: KafkaTopicSettings) -> list[Change]:
    changes: list[Change] = []
    if new.partitions > old.partitions:
        changes.append(broker("partitions-increased", CARE, event, "partitions",
                              f"Kafka partitions {old.partitions} -> {new.partitions}"))
    elif new.partitions < old.partitions:
        changes.append(broker("partitions-decreased", BREAKING, event, "partitions",
                              f"Kafka partitions {old.partitions} -> {new.partitions}"))
    if new.replication_factor != old.replication_factor:
        changes.append(broker("replication-changed", BREAKING, event, "replication_factor",
                              f"Kafka replication factor {old.replication_factor} -> {new.replication_factor}"))
    for key in sorted({*old.configs, *new.configs}):
        before, after = old.configs.get(key), new.configs.get(key)
        if before == after:
            continue
        if key == RETENTION and before is not None and after is not None:
            changes.append(retention_change(event, before, after))
        elif key == CLEANUP:
            changes.append(broker("cleanup-policy-changed", BREAKING, event, "cleanup_policy",
                                  f"Kafka {CLEANUP} {before or 'broker default'} -> {after or 'broker default'}"))
        else:
            changes.append(broker("topic-config-changed", CARE, event, "retention" if key == RETENTION else "configs",
                                  f"Kafka topic config {key}: {before or 'broker default'} -> "
                                  f"{after or 'broker default'}"))
    return changes


def common_event_changes(old: EventType, new: EventType) -> list[Change]:
    name = new.name
    changes = payload_changes(old, new)
    old_topics = {t.chain_id: t for t in old.topics}
    new_topics = {t.chain_id: t for t in new.topics}
    for chain in sorted(new_topics.keys() - old_topics.keys()):
        changes.append(broker("chain-added", SAFE, name, "chains", f"now on chain {chain} "
                              f"(topic {new_topics[chain].topic})"))
    for chain in sorted(old_topics.keys() - new_topics.keys()):
        changes.append(Change("chain-removed", Side.CONSUMERS, BREAKING, f"event {name}", ("events", name, "chains"),
                              f"no longer on chain {chain}: the new classes refuse its events, topic "
                              f"{old_topics[chain].topic} is no longer read", event=name))
    common = sorted(old_topics.keys() & new_topics.keys())
    renamed = [f"{old_topics[c].topic} -> {new_topics[c].topic}" for c in common
               if old_topics[c].topic != new_topics[c].topic]
    if renamed:
        changes.append(broker("topic-renamed", BREAKING, name, None, f"Kafka topics renamed: {', '.join(renamed)}"))
    rerouted = [f"{old_topics[c].routing_key} -> {new_topics[c].routing_key}" for c in common
                if old_topics[c].routing_key != new_topics[c].routing_key]
    if rerouted:
        changes.append(broker("routing-key-renamed", BREAKING, name, None,
                              f"RabbitMQ routing keys renamed: {', '.join(rerouted)}"))
    if old.key != new.key:
        changes.append(broker("key-field-changed", BREAKING, name, "key", f"key field {old.key} -> {new.key}"))
    if old.ordered != new.ordered:
        changes.append(broker("ordering-required" if new.ordered else "ordering-relaxed", CARE, name, "ordered",
                              f"ordered {str(old.ordered).lower()} -> {str(new.ordered).lower()}"))
    return changes + kafka_changes(name, old.kafka, new.kafka)


def event_changes(old: Topology, new: Topology) -> list[Change]:
    before = {e.name: e for e in old.events}
    after = {e.name: e for e in new.events}
    removed = [before[n] for n in before if n not in after]
    added = [after[n] for n in after if n not in before]
    changes: list[Change] = []
    for event in removed:
        twin = next((a for a in added if shape(a) == shape(event)), None)
        if twin is not None:
            added.remove(twin)
            changes.append(broker("event-renamed", BREAKING, twin.name, None,
                                  f"renamed from {event.name} (same payload): new topics "
                                  f"{', '.join(t.topic for t in twin.topics)}; events on "
                                  f"{', '.join(t.topic for t in event.topics)} are no longer read"))
            continue
        changes.append(Change("event-removed", Side.PRODUCERS, BREAKING, f"event {event.name}", ("events",),
                              f"event {event.name} removed: the new classes cannot publish or read it",
                              event=event.name))
        changes.append(Change("event-removed", Side.BROKERS, CARE, f"event {event.name}", ("events",),
                              f"topics {', '.join(t.topic for t in event.topics)} are no longer managed",
                              event=event.name))
    for event in added:
        changes.append(broker("event-added", SAFE, event.name, None,
                              f"new event: topics {', '.join(t.topic for t in event.topics)}"))
    for name in before:
        if name in after:
            changes += common_event_changes(before[name], after[name])
    return changes
