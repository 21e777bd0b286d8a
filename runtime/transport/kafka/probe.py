"""Reaching Kafka within a bounded time, and the one-line errors when it cannot be reached or a
topic of the topology is missing (the check every command makes before it relies on the broker)."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer

from topo.core.connect import env_setting
from topo.core.model import ConsumerGroup, KafkaSettings, Topology
from topo.runtime.transport.base import BrokerUnreachable, NotProvisioned
from topo.runtime.transport.kafka.config import KAFKA_CLIENT_LOG, client_config

PROBE_TIMEOUT = 6.0  # seconds: a command reports an unreachable broker well within 15 s


def kafka_unreachable(settings: KafkaSettings, servers: str, reason: str) -> BrokerUnreachable:
    """`kafka: cannot reach the broker at ADDRESS (SETTING): REASON; FIX`."""
    variable, _default = env_setting(settings.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    return BrokerUnreachable(f"kafka: cannot reach the broker at {servers} ({variable}, "
                             f"broker.kafka.bootstrap_servers): {reason}; start the broker or point {variable} at it")


def probe(topology: Topology, topics: Sequence[str], timeout: float = PROBE_TIMEOUT) -> None:
    """Read the cluster's metadata within `timeout` seconds; raise BrokerUnreachable, or
    NotProvisioned for the first of `topics` that does not exist."""
    config = client_config(topology.kafka, "topo-probe")
    client = Producer(config)
    try:
        metadata = client.list_topics(timeout=timeout)
    except KafkaException as error:
        client.poll(0)  # serve the client's logs: the latest connection failure says why
        reason = KAFKA_CLIENT_LOG.last_failure or error.args[0].str()
        raise kafka_unreachable(topology.kafka, str(config["bootstrap.servers"]), reason) from None
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            missing = f"topic {topic} at {config['bootstrap.servers']}"
            raise NotProvisioned("kafka", missing, topology.name)


def group_topics(group: ConsumerGroup) -> list[str]:
    """Every topic a group member reads or writes: subscriptions, retry topics, dead-letter topic."""
    return sorted({t for s in group.subscriptions for t in s.topics} | {r.name for r in group.kafka.retry_topics}
                  | {group.kafka.dlq_topic})
