"""Fault tests on the local 3-node cluster: acknowledged events survive broker faults.

Each test runs a publisher process (40 events/s over 6 keys) and three `topo run` consumer
processes of one ordered group with a shared SQLite dedup store (`fault_bus`), injects one fault
while they run, lets them recover, drains, and prints its history summary. Each asserts 0 lost
acknowledged events, 0 duplicated side effects and 0 per-key order violations.

Faults: SIGKILL of the Kafka leader of a partition, then its restart; a Kafka broker paused
(SIGSTOP) for 20 s; the RabbitMQ node leading the quorum queues stopped (SIGKILL) and restarted;
one RabbitMQ consumer cut off from the brokers for 30 s (it runs in a network namespace the test
creates, reaching the cluster over a veth pair whose host end goes down); an exactly-once Kafka
group through a leader kill. The summaries are appended to `$TOPO_FAULT_SUMMARY` when set (JSON
lines), which docs/faults.md's table was measured with.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dev.brokerkit.cluster_nodes import cluster_nodes
from tests.cluster.fault_bus import EVENT, GROUP, FaultBus
from tests.support.cluster import LocalCluster
from tests.support.history_check import HistoryReport
from tests.support.waiting import wait_until

RUN_BEFORE = 10.0  # seconds of traffic before the fault
RUN_AFTER = 15.0  # seconds of traffic after the fault ended
PAUSE_FOR = 20.0
CUT_FOR = 30.0
DOWN_FOR = 5.0  # a killed node stays down this long before it is started again
START_NODE_TIMEOUT = 300.0


@pytest.fixture
def bus_factory(tmp_path: Path) -> Iterator[list[FaultBus]]:
    made: list[FaultBus] = []
    yield made
    for bus in made:
        bus.close()


def new_bus(made: list[FaultBus], folder: Path, broker: str, cluster: LocalCluster,
            delivery: str = "at_least_once") -> FaultBus:
    bus = FaultBus(folder, broker, cluster.env, delivery)
    made.append(bus)
    return bus


def report(bus: FaultBus, history: HistoryReport) -> None:
    """Print the history's summary (and append it to $TOPO_FAULT_SUMMARY), then judge it."""
    print(history.summary())
    target = os.environ.get("TOPO_FAULT_SUMMARY")
    if target:
        with Path(target).open("a") as out:
            out.write(json.dumps({"fault": ", ".join(bus.faults), "broker": bus.broker, "published": history.attempted,
                                  "acknowledged": history.acknowledged, "handled": history.handled,
                                  "lost": len(history.lost), "duplicated": len(history.duplicated),
                                  "order_violations": len(history.order_violations),
                                  "max_recovery_seconds": history.max_recovery}) + "\n")
    assert history.clean, history.summary()
    assert history.acknowledged > 0.5 * history.attempted, history.summary()  # publishing went on
    assert history.max_recovery is not None, history.summary()


def traffic(seconds: float) -> None:
    """Let the publisher and consumers run: a span of the scenario, not a synchronisation."""
    time.sleep(seconds)


def kafka_leader(cluster: LocalCluster, topic: str, partition: int = 0) -> str:
    """The cluster node (kafka-N) leading `topic`'s `partition` (Kafka's node.id is N)."""
    admin = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})
    leader = admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader
    return f"kafka-{leader}"


def kafka_topic(bus: FaultBus) -> str:
    return f"{bus.name}.{EVENT}.1"


def wait_for_progress(bus: FaultBus, what: str) -> None:
    """Handled events keep arriving after the fault (bounded)."""
    seen = bus.handled()
    wait_until(lambda: bus.handled() > seen + 40, 120, f"events handled again after {what}")


def restart_in_background(cluster: LocalCluster, node: str) -> threading.Thread:
    """Start `node` again while the traffic goes on (a Kafka node takes a minute or more to be healthy)."""
    thread = threading.Thread(target=cluster.start, args=(node,), name=f"start {node}", daemon=True)
    thread.start()
    return thread


def run_kafka_leader_kill(made: list[FaultBus], tmp_path: Path, cluster: LocalCluster, delivery: str,
                          fault: str) -> None:
    bus = new_bus(made, tmp_path, "kafka", cluster, delivery)
    bus.start()
    traffic(RUN_BEFORE)
    leader = kafka_leader(cluster, kafka_topic(bus))
    name = f"{fault} ({leader})"
    bus.fault(name, "start")
    cluster.kill(leader)
    traffic(DOWN_FOR)
    restarted = restart_in_background(cluster, leader)
    wait_for_progress(bus, fault)
    restarted.join(START_NODE_TIMEOUT)
    assert not restarted.is_alive(), f"{leader} not healthy within {START_NODE_TIMEOUT:.0f}s"
    bus.fault(name, "end")  # the node is back: traffic goes on after it, so recovery is measurable
    traffic(RUN_AFTER)
    report(bus, bus.finish())


@pytest.mark.kafka
def test_kafka_partition_leader_killed_and_restarted(bus_factory: list[FaultBus], tmp_path: Path,
                                                     local_cluster: LocalCluster) -> None:
    run_kafka_leader_kill(bus_factory, tmp_path, local_cluster, "at_least_once", "kafka leader kill -9")


@pytest.mark.kafka
def test_kafka_exactly_once_group_through_a_leader_kill(bus_factory: list[FaultBus], tmp_path: Path,
                                                        local_cluster: LocalCluster) -> None:
    run_kafka_leader_kill(bus_factory, tmp_path, local_cluster, "exactly_once", "kafka exactly-once, leader kill -9")


@pytest.mark.kafka
def test_kafka_broker_paused_for_20_seconds(bus_factory: list[FaultBus], tmp_path: Path,
                                            local_cluster: LocalCluster) -> None:
    bus = new_bus(bus_factory, tmp_path, "kafka", local_cluster)
    bus.start()
    traffic(RUN_BEFORE)
    leader = kafka_leader(local_cluster, kafka_topic(bus))
    name = f"kafka leader paused {PAUSE_FOR:.0f}s ({leader})"
    bus.fault(name, "start")
    local_cluster.pause(leader)
    traffic(PAUSE_FOR)
    local_cluster.resume(leader)
    bus.fault(name, "end")
    wait_for_progress(bus, "pause")
    traffic(RUN_AFTER)
    report(bus, bus.finish())


# ---------------------------------------------------------------- RabbitMQ


def management_get(path: str) -> object:
    """GET from the management API of the first RabbitMQ node that answers."""
    for node in cluster_nodes():
        if node.kind != "rabbitmq":
            continue
        request = urllib.request.Request(f"http://127.0.0.1:{node.ports['management']}/api{path}")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            continue
    raise AssertionError("no RabbitMQ management API answered")


def quorum_leader(queue: str) -> str:
    """The cluster node (rabbit-N) leading quorum queue `queue`."""
    found = management_get(f"/queues/%2F/{urllib.request.quote(queue, safe='')}")
    assert isinstance(found, dict), found
    leader = str(found.get("leader") or found.get("node"))
    return next(node.name for node in cluster_nodes() if node.kind == "rabbitmq" and node.erlang_node == leader)


@pytest.mark.rabbitmq
def test_rabbitmq_quorum_leader_node_stopped_and_restarted(bus_factory: list[FaultBus], tmp_path: Path,
                                                           local_cluster: LocalCluster) -> None:
    bus = new_bus(bus_factory, tmp_path, "rabbitmq", local_cluster)
    bus.start()
    traffic(RUN_BEFORE)
    leaders = [quorum_leader(f"{bus.name}.{GROUP}.{index}") for index in range(3)]
    node = max(set(leaders), key=leaders.count)  # the node leading most of the group's queues
    name = f"rabbitmq quorum leader node kill -9 + restart ({node}, leads {leaders.count(node)}/3)"
    bus.fault(name, "start")
    local_cluster.kill(node)
    traffic(DOWN_FOR)
    restarted = restart_in_background(local_cluster, node)
    wait_for_progress(bus, "rabbitmq node restart")
    restarted.join(START_NODE_TIMEOUT)
    assert not restarted.is_alive(), f"{node} not healthy within {START_NODE_TIMEOUT:.0f}s"
    bus.fault(name, "end")  # the node is back: traffic goes on after it, so recovery is measurable
    traffic(RUN_AFTER)
    report(bus, bus.finish())


class Namespace:
    """A network namespace with a veth pair to the host; TCP relays on the host end reach the
    cluster's RabbitMQ nodes on loopback. `cut()` takes the host end down: packets to and from
    the namespace are dropped (no reset), as in a network partition; `mend()` brings it back."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"topo-ft-{tag}"
        self.host_end, self.ns_end = f"tfh{tag}", f"tfn{tag}"
        octet = int(tag[:2], 16) % 250 + 1
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.listeners: list[socket.socket] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        for command in (["ip", "netns", "add", self.name],
                        ["ip", "link", "add", self.host_end, "type", "veth", "peer", "name", self.ns_end],
                        ["ip", "link", "set", self.ns_end, "netns", self.name],
                        ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_end],
                        ["ip", "link", "set", self.host_end, "up"],
                        [*self.exec_prefix, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_end],
                        [*self.exec_prefix, "ip", "link", "set", self.ns_end, "up"],
                        [*self.exec_prefix, "ip", "link", "set", "lo", "up"]):
            subprocess.run(command, check=True, capture_output=True, timeout=30)

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def relay(self, port: int) -> None:
        """Accept on host_ip:port and forward to 127.0.0.1:port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host_ip, port))
        listener.listen()
        self.listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, port), daemon=True).start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:  # the node is down: the client sees its connection closed
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):  # either side gone
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_end, "down"], check=True, timeout=30)

    def mend(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_end, "up"], check=True, timeout=30)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_end], check=False, capture_output=True, timeout=30)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.fail("the network-cut test creates a network namespace: it runs as root (CI does)")
    made = Namespace()
    yield made
    made.close()


def ready_in(namespace: Namespace, bus: FaultBus, index: int) -> bool:
    port = bus.consumer_port(index)
    if port is None:
        return False
    probe = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=3)")
    done = subprocess.run([*namespace.exec_prefix, "python3", "-c", probe], capture_output=True, timeout=30,
                          check=False)
    return done.returncode == 0


@pytest.mark.rabbitmq
def test_rabbitmq_consumer_cut_off_for_30_seconds(bus_factory: list[FaultBus], tmp_path: Path,
                                                  local_cluster: LocalCluster, namespace: Namespace) -> None:
    bus = new_bus(bus_factory, tmp_path, "rabbitmq", local_cluster)
    ports = [node.ports["amqp"] for node in cluster_nodes() if node.kind == "rabbitmq"]
    for port in ports:
        namespace.relay(port)
    inside = ",".join(f"amqp://guest:guest@{namespace.host_ip}:{port}/%2F" for port in ports)
    # Consumers 0 and 1 on loopback; consumer 2 in the namespace, through the veth pair.
    for index in range(2):
        bus.start_consumer(index)
    bus.start_consumer(2, env={"RABBITMQ_URL": inside}, prefix=tuple(namespace.exec_prefix))
    for index in range(2):
        wait_until(lambda i=index: bus.ready(i), 120, f"consumer {index} to be ready")
    wait_until(lambda: ready_in(namespace, bus, 2), 120,
               lambda: f"the consumer in the namespace to be ready:\n{bus.consumers[2][1].read_text()[-3000:]}")
    bus.start_publisher()
    traffic(RUN_BEFORE)
    name = f"rabbitmq consumer cut off {CUT_FOR:.0f}s (network namespace)"
    bus.fault(name, "start")
    namespace.cut()
    traffic(CUT_FOR)
    namespace.mend()
    bus.fault(name, "end")
    wait_for_progress(bus, "network cut")
    traffic(RUN_AFTER)
    report(bus, bus.finish())
