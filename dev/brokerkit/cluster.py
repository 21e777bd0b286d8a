"""The local 3-node Kafka + 3-node RabbitMQ cluster: up, down, status, env and faults on one node.

    python3 dev/brokers.py cluster up | down | status [--json] | env
    python3 dev/brokers.py cluster kill | start | pause | resume NODE     (kafka-1..3, rabbit-1..3)

``kill`` is SIGKILL to the node's processes, ``pause`` SIGSTOP, ``resume`` SIGCONT, ``start``
starts a stopped or killed node again with its data. State lives under ``$TOPO_RUN_DIR/cluster``
and survives ``down``/``up`` (``rm -rf`` it for a new, empty cluster). The single-node dev brokers
are never touched. Tests and tools use the functions here directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from dev.brokerkit.cluster_nodes import (
    CLUSTER_SIZE,
    HOST,
    NODE_NAMES,
    ClusterNode,
    await_group_exit,
    cluster_dir,
    cluster_nodes,
    node_group,
    node_named,
    node_pid,
    node_state,
    signal_node,
)
from dev.brokerkit.kafka_cluster import (
    bootstrap_servers,
    kafka_node_health,
    kafka_node_metadata,
    launch_kafka_node,
    prepare_kafka_nodes,
)
from dev.brokerkit.processes import broker_lock, port_open, stop_group, tail
from dev.brokerkit.rabbitmq_cluster import (
    cluster_view,
    join_cluster,
    launch_rabbit_node,
    prepare_rabbit_nodes,
    rabbit_node_health,
)
from dev.brokerkit.settings import BrokerError, log

CLUSTER_START_TIMEOUT = 180.0  # three JVMs and three Erlang VMs starting at once on 2 loaded cores
CLUSTER_STOP_TIMEOUT = 45.0
KILL_TIMEOUT = 15.0
LOCK = "cluster.lock"

NodeCheck = Callable[[ClusterNode], tuple[bool, str]]


def rabbitmq_urls(nodes: list[ClusterNode]) -> str:
    """Every node's AMQP URL, comma-separated: the form RABBITMQ_URL takes for a cluster."""
    return ",".join(f"amqp://guest:guest@{node.address}/%2F" for node in nodes if node.kind == "rabbitmq")


def cluster_env() -> dict[str, str]:
    """What a client sets to use the cluster: every Kafka node, every RabbitMQ node, rabbit-1's management API."""
    nodes = cluster_nodes()
    management = next(node for node in nodes if node.kind == "rabbitmq").ports["management"]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(nodes),
        "RABBITMQ_URL": rabbitmq_urls(nodes),
        "RABBITMQ_MANAGEMENT_URL": f"http://{HOST}:{management}",
    }


def env_exports() -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in cluster_env().items())


def node_health(node: ClusterNode) -> tuple[bool, str]:
    if node.kind == "kafka":
        return kafka_node_health(node, CLUSTER_SIZE)
    return rabbit_node_health(node, CLUSTER_SIZE)


def node_report(node: ClusterNode) -> dict[str, object]:
    state = node_state(node)
    healthy, detail = (False, "paused (SIGSTOP): resume it") if state == "paused" else node_health(node)
    report: dict[str, object] = {
        "name": node.name,
        "kind": node.kind,
        "address": node.address,
        "ports": dict(node.ports),
        "pid": node_pid(node),
        "state": state,
        "healthy": healthy,
        "health": detail,
    }
    if node.kind == "rabbitmq":
        report["erlang_node"] = node.erlang_node
    return report


def cluster_report() -> dict[str, object]:
    """Each node with its ports, pid, state (up/down/paused) and health; healthy when all six are."""
    nodes = cluster_nodes()
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # a paused node costs a timeout: in parallel
        reports = list(pool.map(node_report, nodes))
    return {
        "healthy": all(report["healthy"] for report in reports),
        "nodes": reports,
        "env": cluster_env(),
        "run_dir": str(cluster_dir()),
    }


def _print_status(report: dict[str, object]) -> None:
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    for entry in nodes:
        ports = " ".join(f"{name} {port}" for name, port in entry["ports"].items())
        pid = entry["pid"] or "-"
        health = ("healthy: " if entry["healthy"] else "NOT healthy: ") + str(entry["health"])
        log(f"cluster {entry['name']:<8} {entry['state']:<6} pid {pid!s:<7} {ports}  {health}")
    log(f"cluster {'healthy' if report['healthy'] else 'NOT healthy'}; state in {report['run_dir']}")


def _check_ports_free(node: ClusterNode) -> None:
    for name, port in node.ports.items():
        if port_open(HOST, port, timeout=0.3):
            raise BrokerError(
                f"{node.name}: {name} port {port} is taken by a process that is not this cluster's node "
                "(another checkout's cluster?); stop it or set TOPO_CLUSTER_PORT_OFFSET (e.g. 1000)"
            )


def _launch(node: ClusterNode) -> None:
    _check_ports_free(node)
    if node.kind == "kafka":
        launch_kafka_node(node)
    else:
        launch_rabbit_node(node)


def _await(nodes: list[ClusterNode], check: NodeCheck, what: str, deadline: float) -> None:
    """Poll ``check`` on every node until all pass; fail when a node died or the deadline passed."""
    pending = list(nodes)
    details: dict[str, str] = {}
    while pending:
        for node in list(pending):
            ok, details[node.name] = check(node)
            if ok:
                pending.remove(node)
            elif node_group(node) is None:
                raise BrokerError(
                    f"{node.name} exited during start-up; {node.log_file} ends with:\n{tail(node.log_file)}")
        if not pending:
            return
        if time.monotonic() > deadline:
            waiting = "; ".join(f"{node.name}: {details[node.name]}" for node in pending)
            logs = ", ".join(str(node.log_file) for node in pending)
            raise BrokerError(f"not {what} in time ({waiting}); see {logs}")
        time.sleep(0.25)


def _rabbit_booted(node: ClusterNode) -> tuple[bool, str]:
    return rabbit_node_health(node, CLUSTER_SIZE)


def _rabbit_clustered(node: ClusterNode) -> tuple[bool, str]:
    view = cluster_view(node) or {}
    running = sorted(name for name, up in view.items() if up)
    return len(running) == CLUSTER_SIZE, f"running nodes {running}"


def _kafka_clustered(node: ClusterNode) -> tuple[bool, str]:
    metadata = kafka_node_metadata(node)
    if metadata is None:
        return False, "no metadata answer"
    registered = sorted(broker for broker, _, _ in metadata.brokers)
    return len(registered) == CLUSTER_SIZE, f"registered brokers {registered}"


def cluster_up(timeout: float = CLUSTER_START_TIMEOUT) -> dict[str, object]:
    """Start every node that is not running, form the RabbitMQ cluster once, wait until all six are healthy."""
    started = time.monotonic()
    deadline = started + timeout
    nodes = cluster_nodes()
    with broker_lock(LOCK):
        paused = [node.name for node in nodes if node_state(node) == "paused"]
        if paused:
            raise BrokerError(f"paused: {', '.join(paused)}; resume first (python3 dev/brokers.py cluster resume NODE)")
        stopped = [node for node in nodes if node_group(node) is None]
        for node in stopped:  # before anything slow: a taken port fails at once
            _check_ports_free(node)
        prepare_kafka_nodes(nodes)
        prepare_rabbit_nodes(nodes)
        for node in stopped:
            _launch(node)
        rabbit = [node for node in nodes if node.kind == "rabbitmq"]
        kafka = [node for node in nodes if node.kind == "kafka"]
        _await(rabbit, _rabbit_booted, "booted", deadline)
        seed = rabbit[0]
        for node in rabbit[1:]:
            if seed.erlang_node not in (cluster_view(node) or {}):
                join_cluster(node, seed)
        _await(rabbit, _rabbit_clustered, "clustered (3 RabbitMQ nodes running)", deadline)
        _await(kafka, _kafka_clustered, "clustered (3 Kafka brokers registered)", deadline)
    log(f"cluster ready in {time.monotonic() - started:.1f}s")
    return cluster_report()


def _stop(node: ClusterNode) -> None:
    pgid = node_group(node)
    if pgid is None:
        return
    log(f"{node.name}: stopping process group {pgid}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGCONT)  # a paused node must run to handle SIGTERM
    stop_group(pgid, node.name, timeout=CLUSTER_STOP_TIMEOUT)


def cluster_down() -> None:
    """Stop every node (SIGTERM, SIGKILL after a timeout), all at once; data stay."""
    started = time.monotonic()
    nodes = cluster_nodes()
    with broker_lock(LOCK), ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        list(pool.map(_stop, nodes))
    log(f"cluster stopped in {time.monotonic() - started:.1f}s; data stay in {cluster_dir()}")


def start_node(name: str, timeout: float = CLUSTER_START_TIMEOUT) -> dict[str, object]:
    """Start one stopped or killed node again with its data; return once it is healthy."""
    node = node_named(name)
    with broker_lock(LOCK):
        state = node_state(node)
        if state == "paused":
            raise BrokerError(f"{name} is paused, not stopped: python3 dev/brokers.py cluster resume {name}")
        if state == "down":
            if not (node.home / "node.pid").exists():
                raise BrokerError(f"{name} was never started: python3 dev/brokers.py cluster up")
            nodes = cluster_nodes()
            if node.kind == "kafka":
                prepare_kafka_nodes(nodes)
            else:
                prepare_rabbit_nodes(nodes)
            _launch(node)
        _await([node], node_health, "healthy", time.monotonic() + timeout)
    return node_report(node)


def kill_node(name: str) -> None:
    """SIGKILL every process of the node (no shutdown: a crash); returns once they are gone."""
    node = node_named(name)
    pgid = signal_node(node, signal.SIGKILL)
    await_group_exit(node, pgid, KILL_TIMEOUT)
    log(f"{name}: killed (SIGKILL to process group {pgid})")


def pause_node(name: str) -> None:
    node = node_named(name)
    pgid = signal_node(node, signal.SIGSTOP)
    log(f"{name}: paused (SIGSTOP to process group {pgid})")


def resume_node(name: str) -> None:
    node = node_named(name)
    pgid = signal_node(node, signal.SIGCONT)
    log(f"{name}: resumed (SIGCONT to process group {pgid})")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev/brokers.py cluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the six nodes and wait until they are healthy")
    commands.add_parser("down", help="stop the six nodes (data stay)")
    status_parser = commands.add_parser("status", help="each node's ports, pid, state, health (exit 1 unless healthy)")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("env", help="shell exports of KAFKA_BOOTSTRAP_SERVERS, RABBITMQ_URL, RABBITMQ_MANAGEMENT_URL")
    for verb, text in (("kill", "SIGKILL"), ("start", "start (again, with its data)"), ("pause", "SIGSTOP"),
                       ("resume", "SIGCONT")):
        commands.add_parser(verb, help=f"{text} one node").add_argument("node", choices=NODE_NAMES)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            _print_status(cluster_up())
        elif args.command == "down":
            cluster_down()
        elif args.command == "status":
            report = cluster_report()
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_status(report)
            return 0 if report["healthy"] else 1
        elif args.command == "env":
            sys.stdout.write(env_exports())
        elif args.command == "start":
            start_node(args.node)
            log(f"{args.node}: started and healthy")
        else:
            {"kill": kill_node, "pause": pause_node, "resume": resume_node}[args.command](args.node)
    except BrokerError as exc:
        print(f"[brokers] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
