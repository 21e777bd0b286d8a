"""Replication settings of the Kafka topics: `min_insync_replicas`, its layers and its default.

The default is 2 with 3 or more replicas (one broker may fail without losing an acknowledged
write or refusing writes) and the broker's own (unset) below that; retry and dead-letter topics
take the highest value of the events they carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from topo.core.desired import TopicRole, kafka_topics
from topo.core.model import Topology
from topo.generator.load import load


def compiled(tmp_path: Path, kafka: dict[str, Any] | None = None, event: dict[str, Any] | None = None,
             defaults: dict[str, Any] | None = None) -> Topology:
    doc = {
        "version": 1,
        "name": "shop",
        "broker": {"kafka": kafka or {}},
        "chains": {1: {"name": "main"}},
        "defaults": defaults or {},
        "events": {
            "order.placed": {"producers": ["web"], "payload": {"order_id": "string"}, **(event or {})},
            "order.paid": {"producers": ["web"], "payload": {"order_id": "string"}},
        },
        "consumer_groups": {"billing": {"subscribes": ["order.placed", "order.paid"]}},
    }
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    topology, diagnostics = load(path, {})
    assert topology is not None, diagnostics
    return topology


def in_sync(topology: Topology) -> dict[str, tuple[int, str | None]]:
    """topic -> (replication factor, min.insync.replicas) of every topic topo provisions."""
    return {t.name: (t.replication_factor, t.configs.get("min.insync.replicas")) for t in kafka_topics(topology)}


def test_three_replicas_default_to_two_in_sync_on_every_topic(tmp_path: Path) -> None:
    topics = in_sync(compiled(tmp_path, kafka={"replication_factor": 3}))
    assert len(topics) == 6  # two event topics, the group's three retry topics and its dead-letter topic
    assert set(topics.values()) == {(3, "2")}


def test_fewer_than_three_replicas_leave_it_to_the_broker(tmp_path: Path) -> None:
    assert {value for value in in_sync(compiled(tmp_path, kafka={"replication_factor": 2})).values()} == {(2, None)}
    assert {value for value in in_sync(compiled(tmp_path)).values()} == {(1, None)}


def test_the_nearest_layer_wins_and_plumbing_topics_take_the_highest(tmp_path: Path) -> None:
    topology = compiled(tmp_path, kafka={"replication_factor": 5, "min_insync_replicas": 3},
                        defaults={"configs": {"min.insync.replicas": 2}},
                        event={"configs": {"min.insync.replicas": 4}})
    by_role = {(t.role, t.event): t.configs.get("min.insync.replicas") for t in kafka_topics(topology)}
    assert by_role[(TopicRole.EVENT, "order.placed")] == "4"  # the event's own configs
    assert by_role[(TopicRole.EVENT, "order.paid")] == "2"  # defaults.configs before broker.kafka
    assert by_role[(TopicRole.DLQ, None)] == "4"  # the dead-letter topic carries both events
