"""Every name and default the topology derives, in one place.

The resolver (`topo.generator.resolve`) builds the model with these functions and validation
checks the names it finds on that model, so a derived name (topic, routing key, group id, retry
and dead-letter topics and queues, exchanges, classes, module) has exactly one definition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from topo.core.durations import format_duration
from topo.core.headers import KEY as KEY_HEADER
from topo.core.model import EventType, KafkaSettings, KafkaTopicSettings, RetryDestination, RetryPolicy

__all__ = [
    "CHAIN_ID", "CRASH_LOOP_ALLOWANCE", "DEFAULT_ALERTS", "DEFAULT_COMPATIBILITY", "DEFAULT_DEDUP_CAPACITY",
    "DEFAULT_DEDUP_STORE", "DEFAULT_DEDUP_TABLE", "DEFAULT_ENVELOPE", "DEFAULT_EVENT_VERSION", "DEFAULT_KAFKA",
    "DEFAULT_MAX_IN_FLIGHT", "DEFAULT_PARTITIONS", "DEFAULT_RABBITMQ", "DEFAULT_READER", "DEFAULT_RETRY",
    "DEFAULT_TOPIC_NAMING", "DLQ_MIN_RETENTION_MS", "KEY_HEADER", "MIN_INSYNC_REPLICAS", "NAMING_PLACEHOLDERS",
    "SAFE_MIN_INSYNC_REPLICAS", "class_name", "cloudevents_producer", "cloudevents_source", "default_exchange",
    "default_min_insync_replicas", "dlq_name", "envelope_class_name", "events_module", "format_name", "group_prefix",
    "hash_exchange_type", "plumbing_topic_settings", "retry_destinations", "retry_name", "work_queue_names",
]

CHAIN_ID = "chain_id"
DEFAULT_TOPIC_NAMING = "{event_type}.{chain_id}"
NAMING_PLACEHOLDERS = ("event_type", "chain_id", "chain", "topology")

DEFAULT_RETRY: dict[str, Any] = {"max_retries": 3, "backoff": "exponential", "initial": "1s", "multiplier": 2,
                                 "max": "1m"}
DEFAULT_ALERTS: dict[str, Any] = {
    "consumer_lag": {"events": 1000, "seconds": 300, "for": "1m"},
    "dead_letter": {"events": 0},
    "error_rate": {"ratio": 0.01, "for": "5m"},
    "stalled": {"for": "5m"},
}
# Connection settings as `${VAR:-default}` references: resolved from the environment when a
# client connects, never written into generated files as values.
DEFAULT_KAFKA: dict[str, str] = {
    "bootstrap_servers": "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}",
    "security_protocol": "${KAFKA_SECURITY_PROTOCOL:-PLAINTEXT}",
    "sasl_mechanism": "${KAFKA_SASL_MECHANISM:-PLAIN}",
    "sasl_username": "${KAFKA_SASL_USERNAME:-}",
    "sasl_password": "${KAFKA_SASL_PASSWORD:-}",
}
DEFAULT_RABBITMQ: dict[str, str] = {
    "url": "${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}",
    "management_url": "${RABBITMQ_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:15672}",
}
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_DEDUP_CAPACITY = 100_000
DEFAULT_DEDUP_STORE = "memory"
DEFAULT_DEDUP_TABLE = "topo_processed"  # the PostgreSQL store's table of processed event ids
DEFAULT_PARTITIONS = 3
DEFAULT_EVENT_VERSION = "1.0"
MIN_INSYNC_REPLICAS = "min.insync.replicas"  # the Kafka topic config `min_insync_replicas` sets
# With acks=all a write is acknowledged once this many replicas have it: 2 of 3 survives the loss
# of any one broker without losing an acknowledged write, and keeps accepting writes meanwhile.
SAFE_MIN_INSYNC_REPLICAS = 2
DEFAULT_READER = "tolerant"  # consumers accept payload fields they do not know
DEFAULT_COMPATIBILITY = "backward"  # as Schema Registry's default
DEFAULT_ENVELOPE = "topo"  # the standard JSON envelope; `cloudevents` opts in to CloudEvents binary mode
# Dead letters wait for a person to look at them: keep them at least this long (milliseconds).
DLQ_MIN_RETENTION_MS = 30 * 24 * 3600 * 1000
# Redeliveries beyond the retry budget only come from crashes mid-handler; the quorum queue's
# delivery limit dead-letters such a crash loop instead of cycling forever.
CRASH_LOOP_ALLOWANCE = 5


def class_name(event_name: str) -> str:
    """`token.transfer` -> `TokenTransfer`; `nft.mint-v2` -> `NftMintV2`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[._\-]+", event_name) if part)


def envelope_class_name(class_name: str) -> str:
    """The generated envelope class of an event's payload class: `BlockNew` -> `BlockNewEvent`."""
    return f"{class_name}Event"


def events_module(topology: str) -> str:
    """The generated Python module's name: `explorer` -> `explorer_events`."""
    return re.sub(r"[^a-z0-9_]", "_", topology.lower()) + "_events"


def format_name(template: str, **values: str | int) -> str:
    """A topic or routing key from a naming template (`{event_type}.{chain_id}`)."""
    return template.format(**{key: str(value) for key, value in values.items()})


def cloudevents_source(topology: str, producer: str) -> str:
    """The CloudEvents `source` of events a topology's producer publishes: `/topo/explorer/indexer`."""
    return f"/topo/{topology}/{producer}"


def cloudevents_producer(topology: str, source: str) -> str | None:
    """The producer named by a `source` of `cloudevents_source(topology, ...)`; None for any other source."""
    head = f"/topo/{topology}/"
    return source[len(head):] if source.startswith(head) and len(source) > len(head) else None


def default_exchange(topology: str) -> str:
    """The RabbitMQ topic exchange events are published to, unless the topology names one."""
    return f"{topology}.events"


def default_image(topology: str) -> str:
    """The image the Deployments run unless `deploy.image` names one: the user's own build (docs/deploy.md)."""
    return f"{topology.replace('_', '-')}-topo:latest"


def group_prefix(topology: str, group: str) -> str:
    """Prefix of everything a consumer group owns: Kafka group id, its exchange, queues, plumbing."""
    return f"{topology}.{group}"


def dlq_name(prefix: str) -> str:
    """A group's dead-letter topic (Kafka) and queue (RabbitMQ)."""
    return f"{prefix}.dlq"


def retry_name(prefix: str, delay_seconds: float) -> str:
    """A group's retry topic / wait queue for one delay."""
    return f"{prefix}.retry.{format_duration(delay_seconds)}"


def work_queue_names(prefix: str, partitions: int) -> tuple[str, ...]:
    """A group's RabbitMQ work queues, one per partition."""
    return tuple(f"{prefix}.{index}" for index in range(partitions))


def hash_exchange_type(partitions: int) -> Literal["x-consistent-hash", "fanout"]:
    """A group's own exchange: consistent-hash over its queues, or fanout for a single queue."""
    return "x-consistent-hash" if partitions > 1 else "fanout"


def retry_destinations(prefix: str, policy: RetryPolicy) -> tuple[RetryDestination, ...]:
    """One retry topic / wait queue per distinct delay of the policy."""
    unique = sorted(set(policy.delays_seconds))
    return tuple(RetryDestination(delay_seconds=d, name=retry_name(prefix, d)) for d in unique)


def default_min_insync_replicas(replication_factor: int) -> int | None:
    """`min_insync_replicas` when the topology sets none: 2 with 3 or more replicas; else None, the
    broker's own default (1), since 2 of 2 would stop every write while one broker is down."""
    return SAFE_MIN_INSYNC_REPLICAS if replication_factor >= 3 else None


def plumbing_topic_settings(events: Sequence[EventType], kafka: KafkaSettings,
                            min_retention_ms: int | None = None) -> KafkaTopicSettings:
    """Settings of a group's retry or dead-letter topic, derived from the events it carries.

    As many partitions and replicas as the largest of those events, the highest of their
    `min.insync.replicas` (else the default for that many replicas); always `cleanup.policy=delete`
    (compaction would drop retries and dead letters that share a key); the longest of their
    retentions, raised to `min_retention_ms` when given.
    """
    retentions = [int(e.kafka.configs["retention.ms"]) for e in events if "retention.ms" in e.kafka.configs]
    if min_retention_ms is not None:
        retentions.append(min_retention_ms)
    configs = {"cleanup.policy": "delete"}
    if retentions:
        configs["retention.ms"] = str(-1 if -1 in retentions else max(retentions))
    replication_factor = max((e.kafka.replication_factor for e in events), default=kafka.replication_factor)
    in_sync = [int(e.kafka.configs[MIN_INSYNC_REPLICAS]) for e in events if MIN_INSYNC_REPLICAS in e.kafka.configs]
    min_insync = max(in_sync) if in_sync else default_min_insync_replicas(replication_factor)
    if min_insync is not None:
        configs[MIN_INSYNC_REPLICAS] = str(min_insync)
    return KafkaTopicSettings(
        partitions=max((e.kafka.partitions for e in events), default=kafka.partitions),
        replication_factor=replication_factor,
        configs=dict(sorted(configs.items())),
    )
