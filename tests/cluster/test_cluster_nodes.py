"""The local cluster's command line does what it says: status, env, kill/start, pause/resume.

Runs on the cluster of ``make cluster-up`` (``make test-faults``), through the same command a
developer types, ``python3 dev/brokers.py cluster ...``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from dev.brokerkit.kafka_protocol import kafka_metadata
from tests.support.cluster import LocalCluster
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES = ["kafka-1", "kafka-2", "kafka-3", "rabbit-1", "rabbit-2", "rabbit-3"]


def brokers_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "dev/brokers.py", "cluster", *args], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=timeout, check=False)


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def registered_brokers(port: int) -> list[int]:
    return sorted(node for node, _, _ in kafka_metadata("127.0.0.1", port, timeout=3).brokers)


def test_status_json_lists_six_healthy_nodes_with_ports_and_pids(local_cluster: LocalCluster) -> None:
    result = brokers_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    assert [node["name"] for node in report["nodes"]] == NODES
    for node in report["nodes"]:
        assert node["state"] == "up" and node["healthy"] is True, node
        assert isinstance(node["pid"], int) and Path(f"/proc/{node['pid']}").exists(), node
    kafka = {node["name"]: node["ports"] for node in report["nodes"] if node["kind"] == "kafka"}
    rabbit = {node["name"]: node["ports"] for node in report["nodes"] if node["kind"] == "rabbitmq"}
    assert set(kafka["kafka-1"]) == {"broker", "controller"}
    assert set(rabbit["rabbit-1"]) == {"amqp", "management", "dist"}
    every_port = [port for ports in (*kafka.values(), *rabbit.values()) for port in ports.values()]
    assert len(set(every_port)) == 15
    assert not {9092, 9093, 5672, 15672, 25672} & set(every_port), "the cluster must not use the dev brokers' ports"


def test_env_exports_every_node(local_cluster: LocalCluster) -> None:
    result = brokers_cli("env")
    assert result.returncode == 0, result.stderr
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in result.stdout.splitlines())
    assert exported == local_cluster.env
    servers = exported["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert servers == [f"127.0.0.1:{local_cluster.port(f'kafka-{i}', 'broker')}" for i in (1, 2, 3)]
    urls = exported["RABBITMQ_URL"].split(",")
    assert urls == [f"amqp://guest:guest@127.0.0.1:{local_cluster.port(f'rabbit-{i}', 'amqp')}/%2F" for i in (1, 2, 3)]
    # The exports are shell: sourcing them sets exactly these values.
    shell = subprocess.run(["sh", "-c", result.stdout + 'printf %s "$RABBITMQ_URL"'], text=True,
                           capture_output=True, check=True, env={"PATH": os.environ["PATH"]})
    assert shell.stdout == exported["RABBITMQ_URL"]


def test_kill_kafka_2_then_start_it_again_with_its_data(local_cluster: LocalCluster, unique_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": local_cluster.kafka_bootstrap})
    topic = f"{unique_name}-replicated"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[topic].result(timeout=60)

    def in_sync_replicas() -> list[int]:
        meta = admin.list_topics(topic=topic, timeout=10).topics[topic]
        return sorted(meta.partitions[0].isrs) if meta.error is None and meta.partitions else []

    try:
        wait_until(lambda: in_sync_replicas() == [1, 2, 3], 60, f"3 in-sync replicas of {topic}")
        pid = local_cluster.node("kafka-2")["pid"]

        killed = brokers_cli("kill", "kafka-2")
        assert killed.returncode == 0, killed.stderr
        assert not Path(f"/proc/{pid}").exists() or process_state(pid) == "Z", "SIGKILL left the JVM running"
        assert local_cluster.node("kafka-2")["state"] == "down"
        kafka_1 = local_cluster.port("kafka-1", "broker")
        wait_until(lambda: registered_brokers(kafka_1) == [1, 3], 60, "kafka-2 unregistered from the cluster",
                   interval=0.5, ignore=(OSError,))
        wait_until(lambda: in_sync_replicas() == [1, 3], 60, f"kafka-2 out of the ISR of {topic}", interval=0.5)

        started = brokers_cli("start", "kafka-2")
        assert started.returncode == 0, started.stderr
        node = local_cluster.node("kafka-2")
        assert node["state"] == "up" and node["healthy"] is True and node["pid"] != pid, node
        wait_until(lambda: registered_brokers(kafka_1) == [1, 2, 3], 60, "kafka-2 registered again",
                   interval=0.5, ignore=(OSError,))
        # It came back with its replica of the topic and caught up: in sync again.
        wait_until(lambda: in_sync_replicas() == [1, 2, 3], 90, f"kafka-2 back in the ISR of {topic}", interval=0.5)
    finally:
        admin.delete_topics([topic])[topic].result(timeout=60)


def test_pause_and_resume_rabbit_3(local_cluster: LocalCluster) -> None:
    pid = local_cluster.node("rabbit-3")["pid"]
    paused = brokers_cli("pause", "rabbit-3")
    assert paused.returncode == 0, paused.stderr
    report: dict[str, Any] = local_cluster.node("rabbit-3")
    assert report["state"] == "paused" and report["pid"] == pid and process_state(pid) == "T", report
    status = brokers_cli("status")
    assert status.returncode == 1, "status must fail while a node is paused"
    assert local_cluster.node("rabbit-1")["healthy"] is True, "a paused peer must not make rabbit-1 look sick"

    resumed = brokers_cli("resume", "rabbit-3")
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: local_cluster.node("rabbit-3")["healthy"], 60, "rabbit-3 healthy after SIGCONT")
    assert local_cluster.node("rabbit-3")["pid"] == pid
