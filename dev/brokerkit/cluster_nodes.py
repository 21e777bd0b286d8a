"""The six nodes of the local cluster: names, ports, folders, and their processes (state, signals).

Three KRaft Kafka nodes (``kafka-1..3``) and three clustered RabbitMQ nodes (``rabbit-1..3``) on
127.0.0.1, on ports of their own next to the single-node dev brokers (9092/9093, 5672/15672/25672),
which they never touch. ``TOPO_CLUSTER_PORT_OFFSET`` shifts every port (and the Erlang node names),
so that a second cluster can run beside the first (another checkout, CI). Each node is started in
a process group of its own; its pid file records the group, so kill/pause/resume signal exactly
that node's processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Literal

from dev.brokerkit.processes import cmdline, group_members, read_pid
from dev.brokerkit.settings import BrokerError, run_dir

CLUSTER_SIZE = 3
KAFKA_NODES = tuple(f"kafka-{index}" for index in range(1, CLUSTER_SIZE + 1))
RABBIT_NODES = tuple(f"rabbit-{index}" for index in range(1, CLUSTER_SIZE + 1))
NODE_NAMES = KAFKA_NODES + RABBIT_NODES
HOST = "127.0.0.1"

# Base ports; node N uses base + N - 1 (+ TOPO_CLUSTER_PORT_OFFSET).
KAFKA_BROKER_PORT = 19092
KAFKA_CONTROLLER_PORT = 19192
RABBIT_AMQP_PORT = 5682
RABBIT_MANAGEMENT_PORT = 15682
RABBIT_DIST_PORT = 25682

NodeKind = Literal["kafka", "rabbitmq"]
NodeState = Literal["up", "down", "paused"]


def _ports(offset: int) -> list[int]:
    bases = (KAFKA_BROKER_PORT, KAFKA_CONTROLLER_PORT, RABBIT_AMQP_PORT, RABBIT_MANAGEMENT_PORT, RABBIT_DIST_PORT)
    return [base + offset + index for base in bases for index in range(CLUSTER_SIZE)]


def port_offset() -> int:
    value = os.environ.get("TOPO_CLUSTER_PORT_OFFSET", "").strip()
    try:
        offset = int(value) if value else 0
    except ValueError as exc:
        raise BrokerError(f"TOPO_CLUSTER_PORT_OFFSET={value!r} is not a whole number (e.g. 1000)") from exc
    shared = sorted(set(_ports(offset)) & set(_ports(0))) if offset else []
    if shared:
        raise BrokerError(f"TOPO_CLUSTER_PORT_OFFSET={offset} puts the cluster on ports the default cluster uses "
                          f"({', '.join(map(str, shared))}); use a multiple of 1000")
    return offset


def cluster_dir() -> Path:
    """Where the cluster's configuration, data, logs and pid files live: ``$TOPO_RUN_DIR/cluster``."""
    return run_dir() / "cluster"


@dataclasses.dataclass(frozen=True)
class ClusterNode:
    name: str  # kafka-1 ... rabbit-3
    kind: NodeKind
    index: int  # 1..3: Kafka's node.id, the position in every list
    ports: dict[str, int]

    @property
    def home(self) -> Path:
        return cluster_dir() / self.name

    @property
    def pid_file(self) -> Path:
        """Holds the node's process group id (the pid of the process we spawned)."""
        return self.home / "node.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "node.out"

    @property
    def erlang_node(self) -> str:
        """The RabbitMQ node name (distinct from the dev node's ``rabbit@<hostname>``)."""
        offset = port_offset()
        return f"{self.name}{f'-{offset}' if offset else ''}@localhost"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.ports['broker' if self.kind == 'kafka' else 'amqp']}"


def cluster_nodes() -> list[ClusterNode]:
    offset = port_offset()
    kafka = [
        ClusterNode(name, "kafka", index, {"broker": KAFKA_BROKER_PORT + offset + index - 1,
                                           "controller": KAFKA_CONTROLLER_PORT + offset + index - 1})
        for index, name in enumerate(KAFKA_NODES, start=1)
    ]
    rabbit = [
        ClusterNode(name, "rabbitmq", index, {"amqp": RABBIT_AMQP_PORT + offset + index - 1,
                                              "management": RABBIT_MANAGEMENT_PORT + offset + index - 1,
                                              "dist": RABBIT_DIST_PORT + offset + index - 1})
        for index, name in enumerate(RABBIT_NODES, start=1)
    ]
    return kafka + rabbit


def node_named(name: str) -> ClusterNode:
    for node in cluster_nodes():
        if node.name == name:
            return node
    raise BrokerError(f"unknown cluster node {name!r}; choose one of {', '.join(NODE_NAMES)}")


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _belongs_to(node: ClusterNode, pid: int) -> bool:
    """Is ``pid`` one of the node's processes? Kafka's JVM names its config file; RabbitMQ's
    start script and Erlang VM carry the node name in their environment (not on the command line)."""
    if node.kind == "kafka":
        return str(node.home / "server.properties") in cmdline(pid)
    return f"RABBITMQ_NODENAME={node.erlang_node}".encode() in _environ(pid).split(b"\0")


def node_group(node: ClusterNode) -> int | None:
    """The node's process group if it still runs and is the one we started (a recycled pid is not)."""
    pgid = read_pid(node.pid_file)
    if pgid is None:
        return None
    if any(_belongs_to(node, pid) for pid in group_members(pgid)):
        return pgid
    return None


def node_pid(node: ClusterNode) -> int | None:
    """The pid of the node's main process: Kafka's JVM or RabbitMQ's Erlang VM (beam), else its start script."""
    pgid = node_group(node)
    if pgid is None:
        return None
    members = sorted(pid for pid in group_members(pgid) if _belongs_to(node, pid))
    main = [pid for pid in members if node.kind == "kafka" or "beam" in cmdline(pid)]
    return (main or members or [pgid])[0]


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def node_state(node: ClusterNode) -> NodeState:
    pid = node_pid(node)
    if pid is None:
        return "down"
    return "paused" if _process_state(pid) in ("T", "t") else "up"


def signal_node(node: ClusterNode, signum: signal.Signals) -> int:
    """Send ``signum`` to every process of the node; returns its process group."""
    pgid = node_group(node)
    if pgid is None:
        raise BrokerError(f"{node.name} is not running (start it: python3 dev/brokers.py cluster start {node.name})")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
    return pgid


def await_group_exit(node: ClusterNode, pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)  # reap the leader if this process spawned it
        if not group_members(pgid):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"{node.name} (process group {pgid}) still runs {timeout:.0f}s after the signal")
        time.sleep(0.1)
