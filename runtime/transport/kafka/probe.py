"""Reaching Kafka within a bounded time, and the one-line errors when it cannot be reached or a
topic of the topology is missing (the check every command makes before it relies on the broker)."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Producer

from topo.core.kafka_trouble import KafkaTrouble, kafka_trouble, metadata_within
from topo.core.model import ConsumerGroup, KafkaSettings, Topology
from topo.runtime.transport.base import BrokerRefused, BrokerUnreachable, NotProvisioned
from topo.runtime.transport.kafka.config import KAFKA_CLIENT_LOG, client_config

PROBE_TIMEOUT = 6.0  # seconds: a command reports an unreachable broker well within 15 s


def kafka_unreachable(settings: KafkaSettings, servers: str, reason: str) -> BrokerUnreachable | BrokerRefused:
    """`kafka: cannot reach the broker at ADDRESS (SETTING): REASON; FIX`, or BrokerRefused when
    `reason` says it refused the credentials or the client did not trust its certificate."""
    return as_transport_error(kafka_trouble(settings, servers, reason))


def as_transport_error(trouble: KafkaTrouble) -> BrokerUnreachable | BrokerRefused:
    return BrokerRefused(str(trouble)) if trouble.refused else BrokerUnreachable(str(trouble))


def probe(topology: Topology, topics: Sequence[str], timeout: float = PROBE_TIMEOUT) -> None:
    """Read the cluster's metadata within `timeout` seconds; raise BrokerUnreachable, BrokerRefused
    (at once: credentials or TLS trust), or NotProvisioned for the first of `topics` that does not exist."""
    config = client_config(topology.kafka, "topo-probe")
    client = Producer(config)
    try:
        metadata = metadata_within(lambda seconds: client.list_topics(timeout=seconds), lambda: client.poll(0),
                                   KAFKA_CLIENT_LOG, topology.kafka, str(config["bootstrap.servers"]), timeout)
    except KafkaTrouble as trouble:
        raise as_transport_error(trouble) from None
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            missing = f"topic {topic} at {config['bootstrap.servers']}"
            raise NotProvisioned("kafka", missing, topology.name)


def group_topics(group: ConsumerGroup) -> list[str]:
    """Every topic a group member reads or writes: subscriptions, retry topics, dead-letter topic."""
    return sorted({t for s in group.subscriptions for t in s.topics} | {r.name for r in group.kafka.retry_topics}
                  | {group.kafka.dlq_topic})
