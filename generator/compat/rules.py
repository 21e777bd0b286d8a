"""The rule table: every kind of change `topo diff` reports, with its fix (docs/compatibility.md).

A change is seen from three sides: producers (can readers built from the OLD topology still read
what writers built from the NEW one publish? Schema Registry's FORWARD), consumers (can readers
built from the NEW topology read what OLD writers published and what is still on the broker?
BACKWARD) and brokers (what provisioning the new topology does to topics, queues, offsets and
the delivery guarantees). Each side gets a level: safe, needs-care or breaking.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from topo.core.model import Compatibility


class Level(IntEnum):
    SAFE = 0
    CARE = 1
    BREAKING = 2

    @property
    def label(self) -> str:
        return {Level.SAFE: "safe", Level.CARE: "needs-care", Level.BREAKING: "breaking"}[self]


class Side(StrEnum):
    PRODUCERS = "producers"  # new writers -> old readers (FORWARD)
    CONSUMERS = "consumers"  # old writers -> new readers (BACKWARD)
    BROKERS = "brokers"


# The sides a compatibility level protects (payload rules only).
PROTECTED: dict[Compatibility, frozenset[Side]] = {
    Compatibility.BACKWARD: frozenset({Side.CONSUMERS}),
    Compatibility.FORWARD: frozenset({Side.PRODUCERS}),
    Compatibility.FULL: frozenset({Side.CONSUMERS, Side.PRODUCERS}),
    Compatibility.NONE: frozenset(),
}


@dataclass(frozen=True)
class Rule:
    id: str
    fix: str  # what to do instead, or how to make the change safely


@dataclass(frozen=True)
class Change:
    rule: str  # a key of RULES
    side: Side
    level: Level
    subject: str  # e.g. "event block.new", "group analytics", "topology"
    path: tuple[str, ...]  # topology.yaml keys of the changed setting (placed in the new file when it exists)
    message: str
    payload: bool = False  # a payload change: subject to the event's compatibility level
    event: str | None = None

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {rule.id: rule for rule in rules}


RULES = _rules(
    # payload
    Rule("field-added-optional", "safe both ways with tolerant readers; an old strict reader must be upgraded first"),
    Rule("field-added-required", "add it as optional (`required: false`) first; make it required once every "
         "producer sends it and the old events have expired"),
    Rule("field-removed-optional", "safe with tolerant readers; with `reader: strict`, remove it once no "
         "event carrying it is left on the broker"),
    Rule("field-removed-required", "make it optional first and remove it once every consumer runs the new classes"),
    Rule("field-made-required", "keep it optional until every producer sends it and the old events have expired"),
    Rule("field-made-optional", "upgrade every consumer before a producer stops sending it"),
    Rule("field-type-widened", "upgrade every consumer before a producer writes the new values"),
    Rule("field-type-narrowed", "make sure no producer writes (and no retained event holds) values outside the "
         "new type before the consumers are upgraded"),
    Rule("field-type-changed", "add a new field with the new type instead, and remove the old one later"),
    Rule("field-pattern-changed", "topo cannot compare two regular expressions: check that both accept the "
         "values producers write"),
    Rule("enum-values-added", "upgrade every consumer before a producer writes a new value"),
    Rule("enum-values-removed", "make sure no producer writes (and no retained event holds) a removed value"),
    Rule("reader-made-strict", "events carrying fields the classes do not declare become poison: keep "
         "`reader: tolerant` unless every producer runs the same topology"),
    Rule("reader-made-tolerant", "none needed"),
    Rule("event-version-changed", "none needed (metadata.version of new events)"),
    Rule("compatibility-changed", "none needed"),
    # events and topics
    Rule("event-added", "none needed: `topo apply` creates its topics"),
    Rule("event-removed", "stop every producer of it first; its topics stay (topo never deletes event topics)"),
    Rule("event-renamed", "keep the old name, or add the new event beside the old one and move producers and "
         "consumers over before removing the old one"),
    Rule("chain-added", "none needed: `topo apply` creates the topic"),
    Rule("chain-removed", "stop every producer on that chain first; events left on its topic are not read"),
    Rule("topic-renamed", "keep the old name (naming.topic, the topology name), or drain the old topic first: "
         "consumers start on the new one and old producers keep writing the old one"),
    Rule("routing-key-renamed", "keep the old routing key (naming.routing_key), or upgrade every producer "
         "together with the bindings"),
    Rule("key-field-changed", "events of one key before and after the change land on different partitions "
         "and queues: drain the topic first, or add a new event type with the new key"),
    Rule("ordering-relaxed", "handlers that rely on per-key order must not run on the new topology"),
    Rule("ordering-required", "RabbitMQ work queues get single-active-consumer (see queue-arguments-changed); "
         "Kafka retries ordered events in place from then on"),
    Rule("partitions-increased", "keys move to other partitions: per-key order holds only for events published "
         "after the change; drain the topic first if order matters"),
    Rule("partitions-decreased", "Kafka cannot remove partitions: create a new topic (a new event name or "
         "naming) and move producers and consumers over"),
    Rule("replication-changed", "`topo apply` cannot change replicas in place: reassign partitions with Kafka's "
         "tools (kafka-reassign-partitions), then change topology.yaml"),
    Rule("retention-reduced", "events older than the new retention are deleted at once: make sure no consumer "
         "still needs them (lag, replays)"),
    Rule("retention-increased", "none needed (the disk holds more)"),
    Rule("cleanup-policy-changed", "compaction keeps only each key's latest event and deletion drops history: "
         "create a new topic with the new policy instead"),
    Rule("topic-config-changed", "check the effect of the Kafka topic setting on retained events"),
    # groups
    Rule("group-added", "none needed: it starts with new events (Kafka auto.offset.reset=earliest for a new "
         "group id: it reads the retained events)"),
    Rule("group-removed", "its offsets, retry and dead-letter topics and queues are left behind: replay or "
         "drain its dead letters first"),
    Rule("group-renamed", "a new name is a new group: it loses its committed offsets and its queues; keep the "
         "name (the description can change)"),
    Rule("group-id-changed", "the Kafka group id / RabbitMQ queues derive from the topology and group names: "
         "keep both, or move the offsets with kafka-consumer-groups --reset-offsets"),
    Rule("subscription-added", "none needed"),
    Rule("subscription-removed", "events of that subscription are no longer handled by this group"),
    Rule("delivery-downgraded", "exactly_once -> at_least_once: handlers must become idempotent first"),
    Rule("delivery-upgraded", "exactly_once needs Kafka transactions; check the handlers write through "
         "the transaction"),
    Rule("dedup-weakened", "redeliveries after a restart (or beyond the capacity) are no longer dropped: "
         "handlers must tolerate duplicates"),
    Rule("dedup-strengthened", "none needed"),
    Rule("retry-reduced", "failing events are dead-lettered sooner"),
    Rule("retry-destinations-changed", "retry copies waiting in the old retry topics / wait queues are not "
         "consumed any more: let them drain first"),
    Rule("retry-increased", "none needed"),
    Rule("queues-decreased", "events waiting in the removed work queues are stranded: drain the group first"),
    Rule("queues-increased", "keys move to other queues: per-key order holds only for events published after "
         "the change"),
    Rule("queue-arguments-changed", "RabbitMQ refuses to redeclare a queue with other arguments: delete and "
         "re-create it after draining (its messages are lost)"),
    Rule("exchange-changed", "RabbitMQ refuses to redeclare an exchange with another type or arguments: "
         "delete and re-create it (bindings too)"),
    Rule("runtime-setting-changed", "none needed"),
    # topology
    Rule("broker-changed", "the runtime moves to the other broker: nothing (events, offsets, dead letters) "
         "is carried over"),
    Rule("connection-changed", "check that every service can reach the new address"),
    Rule("exchange-renamed", "old producers publish to the old exchange: upgrade them together"),
)
