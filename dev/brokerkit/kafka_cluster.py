"""The cluster's three Kafka nodes: configuration, KRaft storage, launch and health.

Every node is a combined broker + controller; the three controllers form the KRaft quorum
(``controller.quorum.voters``), so the cluster keeps its metadata and elects leaders with one node
down. The nodes share the dev broker's jar cache.
"""

from __future__ import annotations

import os
import string
import struct
from concurrent.futures import ThreadPoolExecutor

from dev.brokerkit.cluster_nodes import HOST, ClusterNode, cluster_dir
from dev.brokerkit.kafka import KafkaPaths, ensure_kafka_jars, format_kafka_storage, kafka_java_argv, new_cluster_id
from dev.brokerkit.kafka_protocol import KafkaMetadata, kafka_metadata
from dev.brokerkit.processes import spawn_detached
from dev.brokerkit.settings import DEV_DIR, KAFKA_VERSION, log

# Three JVMs share 2 cores and the machine's memory with everything else.
CLUSTER_KAFKA_HEAP = os.environ.get("TOPO_CLUSTER_KAFKA_HEAP", "384m")
# Three JVMs compiling at once starve 2 cores: the quick C1 compiler only, and one GC thread each,
# roughly halve their start-up; a test cluster needs no peak throughput.
CLUSTER_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1")


def kafka_node_paths(node: ClusterNode) -> KafkaPaths:
    return KafkaPaths.under(node.home)


def bootstrap_servers(nodes: list[ClusterNode]) -> str:
    return ",".join(node.address for node in nodes if node.kind == "kafka")


def _render_config(node: ClusterNode, voters: str) -> None:
    paths = kafka_node_paths(node)
    template = string.Template((DEV_DIR / "kafka" / "cluster.properties.template").read_text())
    paths.config.write_text(template.substitute(
        node_id=node.index, port=node.ports["broker"], controller_port=node.ports["controller"],
        voters=voters, data_dir=paths.data,
    ))


def prepare_kafka_nodes(nodes: list[ClusterNode]) -> None:
    """Jars, configuration and (once) formatted KRaft storage for ``nodes``, all of one cluster id."""
    kafka = [node for node in nodes if node.kind == "kafka"]
    if not kafka:
        return
    ensure_kafka_jars(kafka_node_paths(kafka[0]))
    id_file = cluster_dir() / "kafka-cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id() + "\n")
    voters = ",".join(f"{node.index}@{HOST}:{node.ports['controller']}" for node in kafka)
    for node in kafka:
        paths = kafka_node_paths(node)
        paths.logs.mkdir(parents=True, exist_ok=True)
        paths.cluster_id.write_text(id_file.read_text())
        _render_config(node, voters)
    # Formatting starts a JVM per node: in parallel, it costs one start-up instead of three.
    with ThreadPoolExecutor(max_workers=len(kafka)) as pool:
        list(pool.map(lambda node: format_kafka_storage(kafka_node_paths(node)), kafka))


def launch_kafka_node(node: ClusterNode) -> int:
    paths = kafka_node_paths(node)
    argv = kafka_java_argv(paths, "kafka.Kafka", str(paths.config), heap=CLUSTER_KAFKA_HEAP,
                           jvm_options=CLUSTER_JVM_OPTIONS)
    pgid = spawn_detached(argv, node.log_file, cwd=node.home)
    node.pid_file.write_text(f"{pgid}\n")
    log(f"{node.name}: Kafka {KAFKA_VERSION} started, pid {pgid}, {node.address} "
        f"(controller {node.ports['controller']})")
    return pgid


def kafka_node_metadata(node: ClusterNode, timeout: float = 2.0) -> KafkaMetadata | None:
    try:
        return kafka_metadata(HOST, node.ports["broker"], timeout=timeout)
    except (OSError, ConnectionError, struct.error, UnicodeDecodeError):
        return None


def kafka_node_health(node: ClusterNode, cluster_size: int) -> tuple[bool, str]:
    """Healthy: the node answers a metadata request and lists itself among the registered brokers."""
    metadata = kafka_node_metadata(node)
    if metadata is None:
        return False, f"no metadata answer on {node.address}"
    registered = sorted(broker for broker, _, _ in metadata.brokers)
    if node.index not in registered:
        return False, f"answers, but broker {node.index} is not registered (brokers {registered})"
    return True, f"{len(registered)}/{cluster_size} brokers registered, cluster {metadata.cluster_id}"
