"""Consumer group and broker-wide changes: groups added, removed or renamed, their ids,
subscriptions, delivery, dedup and retry, RabbitMQ queues and exchanges (from the desired broker
state, `topo.core.desired`), and the topology's broker and connection settings."""

from __future__ import annotations

from topo.core.desired import desired_state, without_marker
from topo.core.model import ConsumerGroup, DedupSettings, Delivery, Topology
from topo.generator.compat.rules import Change, Level, Side

SAFE, CARE, BREAKING = Level.SAFE, Level.CARE, Level.BREAKING
RUNTIME_SETTINGS = ("description", "handler", "max_in_flight", "alerts")


def broker(rule: str, level: Level, group: str, key: str | None, message: str) -> Change:
    path = ("consumer_groups", group) if key is None else ("consumer_groups", group, key)
    return Change(rule, Side.BROKERS, level, f"group {group}", path, message)


def subscribed(group: ConsumerGroup) -> dict[str, frozenset[int]]:
    return {s.event: frozenset(s.chains) for s in group.subscriptions}


def subscription_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    before, after = subscribed(old), subscribed(new)
    changes: list[Change] = []
    for event in after:
        gained = after[event] - before.get(event, frozenset())
        if gained:
            changes.append(broker("subscription-added", SAFE, new.name, "subscribes",
                                  f"now handles {event} on chain(s) {', '.join(map(str, sorted(gained)))}"))
    for event in before:
        lost = before[event] - after.get(event, frozenset())
        if lost:
            changes.append(broker("subscription-removed", CARE, new.name, "subscribes",
                                  f"no longer handles {event} on chain(s) {', '.join(map(str, sorted(lost)))}"))
    return changes


def delivery_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    changes: list[Change] = []
    if old.delivery is not new.delivery:
        downgrade = new.delivery is Delivery.AT_LEAST_ONCE
        changes.append(broker("delivery-downgraded" if downgrade else "delivery-upgraded",
                              BREAKING if downgrade else CARE, new.name, "delivery",
                              f"delivery {old.delivery.value} -> {new.delivery.value}"))
    a, b = old.dedup, new.dedup
    if a != b:
        # A durable store remembers ids across restarts; ids left in another store are forgotten.
        moved = a.store != b.store or (a.path, a.dsn, a.table) != (b.path, b.dsn, b.table)
        weaker = (moved and a.store != "memory") or b.capacity < a.capacity
        changes.append(broker("dedup-weakened" if weaker else "dedup-strengthened", CARE if weaker else SAFE,
                              new.name, "dedup", f"dedup {describe_store(a)} -> {describe_store(b)}"))
    return changes


def describe_store(dedup: DedupSettings) -> str:
    where = {"sqlite": f", path {dedup.path}", "postgres": f", table {dedup.table}"}.get(dedup.store, "")
    return f"{dedup.store} (capacity {dedup.capacity}{where})"  # never the DSN: it may hold a credential


def retry_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    changes: list[Change] = []
    a, b = old.retry, new.retry
    if b.max_retries != a.max_retries:  # other delays alone: their destinations' names tell (below)
        fewer = b.max_retries < a.max_retries
        changes.append(broker("retry-reduced" if fewer else "retry-increased", CARE if fewer else SAFE, new.name,
                              "retry", f"retries {a.max_retries} after {list(a.delays_seconds)}s -> "
                              f"{b.max_retries} after {list(b.delays_seconds)}s"))
    gone = sorted({d.name for d in (*old.kafka.retry_topics, *old.rabbitmq.retry_queues)}
                  - {d.name for d in (*new.kafka.retry_topics, *new.rabbitmq.retry_queues)})
    if gone and old.kafka.group_id == new.kafka.group_id:
        changes.append(broker("retry-destinations-changed", CARE, new.name, "retry",
                              f"retry topics / wait queues no longer used: {', '.join(gone)}"))
    return changes


def queue_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    before, after = len(old.rabbitmq.queues), len(new.rabbitmq.queues)
    if after < before:
        return [broker("queues-decreased", BREAKING, new.name, "partitions",
                       f"RabbitMQ work queues {before} -> {after}")]
    if after > before:
        return [broker("queues-increased", CARE, new.name, "partitions", f"RabbitMQ work queues {before} -> {after}")]
    return []


def runtime_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    changed = [key for key in RUNTIME_SETTINGS if getattr(old, key) != getattr(new, key)]
    changed += [f"handler of {b.event}" for a, b in zip(old.subscriptions, new.subscriptions, strict=False)
                if a.event == b.event and a.handler != b.handler]
    if not changed:
        return []
    return [broker("runtime-setting-changed", SAFE, new.name, None, f"changed: {', '.join(changed)}")]


def common_group_changes(old: ConsumerGroup, new: ConsumerGroup) -> list[Change]:
    changes: list[Change] = []
    if old.kafka.group_id != new.kafka.group_id:
        changes.append(broker("group-id-changed", BREAKING, new.name, None,
                              f"Kafka group id {old.kafka.group_id} -> {new.kafka.group_id} (committed offsets are "
                              f"lost), RabbitMQ queues {old.rabbitmq.queues[0]}... -> {new.rabbitmq.queues[0]}..."))
    return (changes + subscription_changes(old, new) + delivery_changes(old, new) + retry_changes(old, new)
            + queue_changes(old, new) + runtime_changes(old, new))


def group_changes(old: Topology, new: Topology) -> list[Change]:
    before = {g.name: g for g in old.groups}
    after = {g.name: g for g in new.groups}
    added = [after[n] for n in after if n not in before]
    changes: list[Change] = []
    for name, group in before.items():
        if name in after:
            changes += common_group_changes(group, after[name])
            continue
        twin = next((a for a in added if subscribed(a) == subscribed(group)), None)
        if twin is not None:
            added.remove(twin)
            changes.append(broker("group-renamed", BREAKING, twin.name, None,
                                  f"renamed from {name} (same subscriptions): Kafka group id "
                                  f"{group.kafka.group_id} -> {twin.kafka.group_id}, its committed offsets, "
                                  f"queues and dead letters stay behind"))
        else:
            changes.append(Change("group-removed", Side.BROKERS, CARE, f"group {name}", ("consumer_groups",),
                                  f"group {name} removed: its offsets, retry and dead-letter topics and queues "
                                  f"({group.kafka.dlq_topic}) are left behind"))
    for group in added:
        changes.append(broker("group-added", SAFE, group.name, None, f"new group (Kafka group id "
                              f"{group.kafka.group_id})"))
    return changes


def rabbit_changes(old: Topology, new: Topology) -> list[Change]:
    """Queues and exchanges that keep their name but not their type or arguments: immutable in RabbitMQ."""
    if old.name != new.name:
        return []  # every name changed: the renames are reported per group
    before, after = desired_state(old), desired_state(new)
    changes: list[Change] = []
    old_queues = {q.name: q for q in before.queues}
    changed: dict[tuple[str, str], list[str]] = {}  # (group, what differs) -> queues, so one line per group
    for queue in after.queues:
        previous = old_queues.get(queue.name)
        if previous is not None and without_marker(previous.arguments) != without_marker(queue.arguments):
            a, b = without_marker(previous.arguments), without_marker(queue.arguments)
            differs = ", ".join(f"{k} {a.get(k, 'unset')} -> {b.get(k, 'unset')}"
                                for k in sorted(k for k in {*a, *b} if a.get(k) != b.get(k)))
            changed.setdefault((queue.group, differs), []).append(queue.name)
    for (group, differs), queues in changed.items():
        changes.append(broker("queue-arguments-changed", BREAKING, group, None,
                              f"RabbitMQ queue(s) {', '.join(queues)}: {differs}"))
    old_exchanges = {e.name: e for e in before.exchanges}
    for exchange in after.exchanges:
        previous_exchange = old_exchanges.get(exchange.name)
        if previous_exchange is None:
            continue
        if (previous_exchange.type, without_marker(previous_exchange.arguments)) != (
                exchange.type, without_marker(exchange.arguments)):
            owner = next((g.name for g in new.groups if g.rabbitmq.exchange == exchange.name), None)
            path = ("consumer_groups", owner, "partitions") if owner else ("broker", "rabbitmq")
            changes.append(Change("exchange-changed", Side.BROKERS, BREAKING, f"group {owner}" if owner else
                                  "topology", path, f"RabbitMQ exchange {exchange.name}: type {previous_exchange.type}"
                                  f" -> {exchange.type}, arguments {without_marker(previous_exchange.arguments)} -> "
                                  f"{without_marker(exchange.arguments)}"))
    return changes


def topology_changes(old: Topology, new: Topology) -> list[Change]:
    changes: list[Change] = []
    if old.broker is not new.broker:
        changes.append(Change("broker-changed", Side.BROKERS, BREAKING, "topology", ("broker", "kind"),
                              f"broker {old.broker.value} -> {new.broker.value}"))
    if old.rabbitmq.exchange != new.rabbitmq.exchange:
        changes.append(Change("exchange-renamed", Side.BROKERS, BREAKING, "topology", ("broker", "rabbitmq"),
                              f"RabbitMQ exchange {old.rabbitmq.exchange} -> {new.rabbitmq.exchange}"))
    connection = [f"kafka.{key}" for key in ("bootstrap_servers", "security_protocol", "sasl_mechanism",
                                             "sasl_username", "sasl_password")
                  if getattr(old.kafka, key) != getattr(new.kafka, key)]
    connection += [f"rabbitmq.{key}" for key in ("url", "management_url")
                   if getattr(old.rabbitmq, key) != getattr(new.rabbitmq, key)]
    if connection:
        changes.append(Change("connection-changed", Side.BROKERS, CARE, "topology", ("broker",),
                              f"connection settings changed: {', '.join(connection)}"))
    return changes
