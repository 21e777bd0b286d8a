"""The local 3-node cluster in tests: the ``local_cluster`` fixture and its handle.

Tests that use ``local_cluster`` get the marker ``cluster``; they run only with ``pytest --cluster``
(``make test-faults``, after ``make cluster-up``), never in the main ``make test``. The handle
injects faults into one node (kill, start, pause, resume) and, after each test, starts or resumes
any node the test left down or paused, so one test's fault never leaks into the next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from dev.brokerkit import cluster
from dev.brokerkit.cluster_nodes import node_named

START_HINT = "start it with: make cluster-up"


@dataclasses.dataclass(frozen=True)
class LocalCluster:
    """Three Kafka nodes (kafka-1..3) and three RabbitMQ nodes (rabbit-1..3) on loopback."""

    env: dict[str, str]  # KAFKA_BOOTSTRAP_SERVERS, RABBITMQ_URL (every node), RABBITMQ_MANAGEMENT_URL

    @property
    def kafka_bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP_SERVERS"]

    def report(self) -> dict[str, Any]:
        """``cluster status --json``: each node's ports, pid, state and health."""
        return cluster.cluster_report()

    def node(self, name: str) -> dict[str, Any]:
        """One node's entry of :meth:`report` (``ports``, ``pid``, ``state``, ``healthy``, ``health``)."""
        return cluster.node_report(node_named(name))

    def port(self, name: str, kind: str) -> int:
        """A node's port: ``broker``/``controller`` (Kafka), ``amqp``/``management``/``dist`` (RabbitMQ)."""
        return node_named(name).ports[kind]

    def kill(self, name: str) -> None:
        cluster.kill_node(name)

    def start(self, name: str) -> None:
        cluster.start_node(name)

    def pause(self, name: str) -> None:
        cluster.pause_node(name)

    def resume(self, name: str) -> None:
        cluster.resume_node(name)

    def restore(self) -> None:
        """Resume paused nodes and start stopped ones; returns once all six are healthy."""
        for entry in self.report()["nodes"]:
            if entry["state"] == "paused":
                self.resume(entry["name"])
        if not self.report()["healthy"]:
            cluster.cluster_up()


@pytest.fixture(scope="session")
def cluster_session() -> LocalCluster:
    report: dict[str, Any] = cluster.cluster_report()
    if not report["healthy"]:
        sick = "; ".join(f"{entry['name']}: {entry['state']}, {entry['health']}"
                         for entry in report["nodes"] if not entry["healthy"])
        pytest.fail(f"the local cluster is not healthy ({sick}); {START_HINT}", pytrace=False)
    return LocalCluster(env=cluster.cluster_env())


@pytest.fixture
def local_cluster(cluster_session: LocalCluster) -> Iterator[LocalCluster]:
    """The healthy local cluster; any node left down or paused by the test is back afterwards."""
    yield cluster_session
    cluster_session.restore()
