"""`topo apply` on the 3-node cluster: replicated topics and quorum queues, and a clean plan after.

Everything is checked through the brokers' own interfaces (Kafka's admin API, RabbitMQ's
management API), never through topo's model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka.admin import AdminClient

from dev.brokerkit.cluster_nodes import node_named
from tests.provision.helpers import Cli, kafka_state, small_doc, write
from tests.support.cluster import LocalCluster
from tests.support.kafka_cleanup import delete_topology_leftovers


@pytest.fixture
def cluster_vhost(local_cluster: LocalCluster, unique_name: str) -> Iterator[tuple[str, str]]:
    """A fresh vhost on the RabbitMQ cluster (guest granted everything): (management URL, vhost)."""
    management = local_cluster.env["RABBITMQ_MANAGEMENT_URL"]
    session = requests.Session()
    session.auth = ("guest", "guest")
    session.put(f"{management}/api/vhosts/{unique_name}", timeout=30).raise_for_status()
    session.put(f"{management}/api/permissions/{unique_name}/guest", timeout=30,
                json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    yield management, unique_name
    session.delete(f"{management}/api/vhosts/{unique_name}", timeout=60)


def plan_json(cli: Cli, path: Path, broker: str) -> dict[str, Any]:
    code, output = cli("plan", "-t", path, "--broker", broker, "--json")
    assert code == 0, output  # 0: nothing left to apply
    plan: dict[str, Any] = json.loads(output)
    return plan


def test_apply_creates_topics_with_three_replicas_and_two_in_sync(
        local_cluster: LocalCluster, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = small_doc(unique_name)
    doc["broker"]["kafka"] = {"replication_factor": 3}  # min_insync_replicas: 2 by default
    path = write(tmp_path, doc)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", local_cluster.kafka_bootstrap)
    admin = AdminClient({"bootstrap.servers": local_cluster.kafka_bootstrap})
    cli = Cli()
    try:
        code, output = cli("apply", "-t", path, "--broker", "kafka", "--yes")
        assert code == 0, output
        state = kafka_state(admin, unique_name)
        # Two event topics; the indexer's retry topic (fixed 1s) and dead-letter topic; the ws group's dead letters.
        assert len(state) == 5, sorted(state)
        for name, topic in state.items():
            assert topic["replication_factor"] == 3, (name, topic)
            assert topic["configs"].get("min.insync.replicas") == "2", (name, topic)
        metadata = admin.list_topics(timeout=30).topics
        for name in state:
            for partition in metadata[name].partitions.values():
                assert sorted(partition.replicas) == [1, 2, 3], (name, partition)
        assert plan_json(cli, path, "kafka")["summary"]["create"] == 0
        assert cli("apply", "-t", path, "--broker", "kafka", "--yes")[1].strip().endswith("No changes to apply.")
    finally:
        delete_topology_leftovers(admin, unique_name)


def test_apply_creates_quorum_queues_replicated_on_three_nodes(
        local_cluster: LocalCluster, cluster_vhost: tuple[str, str], unique_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    management, vhost = cluster_vhost
    doc = small_doc(unique_name)
    doc["broker"]["kind"] = "rabbitmq"
    path = write(tmp_path, doc)
    first_node = local_cluster.env["RABBITMQ_URL"].split(",")[0].rsplit("/", 1)[0]
    monkeypatch.setenv("RABBITMQ_URL", f"{first_node}/{vhost}")
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", management)
    cli = Cli()
    code, output = cli("apply", "-t", path, "--broker", "rabbitmq", "--yes")
    assert code == 0, output

    queues = requests.get(f"{management}/api/queues/{vhost}", auth=("guest", "guest"), timeout=30).json()
    by_name = {queue["name"]: queue for queue in queues}
    assert by_name, "apply created no queue"
    nodes = {node_named(f"rabbit-{index}").erlang_node for index in (1, 2, 3)}
    for name, queue in by_name.items():
        assert queue["type"] == "quorum", (name, queue["type"])
        assert set(queue["members"]) == nodes, (name, queue["members"])
        assert set(queue["online"]) == nodes, (name, queue["online"])
        if "x-dead-letter-exchange" in queue["arguments"]:  # work and wait queues dead-letter: never lose one
            assert queue["arguments"]["x-dead-letter-strategy"] == "at-least-once", (name, queue["arguments"])
            assert queue["arguments"]["x-overflow"] == "reject-publish", (name, queue["arguments"])
    roles = {name.rsplit(".", 1)[-1] for name in by_name}
    assert "dlq" in roles and any(role.isdigit() for role in roles), sorted(by_name)  # dead letters and work queues

    plan = plan_json(cli, path, "rabbitmq")
    assert plan["summary"] == {"create": 0, "update": 0, "delete": 0, "drift": 0, "impossible": 0}, plan
