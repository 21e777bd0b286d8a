"""k8s/deploy/<group>.yaml (Deployment + KEDA ScaledObject per group) and k8s/monitor/lag-monitor.yaml.

Each group runs as `topo run --group NAME` from the topology's `deploy.image` (the repository's
Dockerfile builds it: topo, the handler modules under /app and the compiled topology at
TOPOLOGY_PATH), in `deploy.namespace` when one is set. Connection settings reach the container as
environment variables from the ConfigMap or the Secret (k8s_env.py), never as values.

KEDA scales on the broker's view of the backlog:
* Kafka: one `kafka` trigger on the group id (every topic it consumes), `lagThreshold` = the
  group's `alerts.consumer_lag.events`, replicas capped at the partitions of its event topics:
  more members than partitions would sit idle.
* RabbitMQ: one `rabbitmq` trigger per work queue (QueueLength, target = the group's lag
  threshold split over its queues); replicas capped at the queue count when the queues are
  single-active-consumer (ordered: one consumer works per queue), at RABBIT_CONSUMERS_PER_QUEUE
  per queue otherwise.
"""

from __future__ import annotations

import math
import re

from topo.core.interpolate import references
from topo.core.model import BrokerKind, ConsumerGroup, DeploySettings, Topology
from topo.core.names import default_image
from topo.generator.emit.k8s_env import env, k8s_name
from topo.generator.render import render

GROUP_TEMPLATE = "k8s/deploy/group.yaml.j2"
MONITOR_TEMPLATE = "k8s/deploy/monitor.yaml.j2"
TOPOLOGY_PATH = "/app/generated/topology.json"
METRICS_PORT = 9100
MONITOR_PORT = 9400
SHUTDOWN_TIMEOUT = 30  # seconds, `topo run --shutdown-timeout`
RABBIT_CONSUMERS_PER_QUEUE = 4
MIN_REPLICAS = 1  # never zero: a group without members is an alert (TopoConsumerDown)
POLLING_INTERVAL = 15
COOLDOWN_PERIOD = 300


def whole_reference(text: str, what: str) -> tuple[str | None, str | None]:
    """(env var, literal) for a setting KEDA must read: a literal, or exactly one `${VAR...}`."""
    refs = references(text)
    if not refs:
        return None, text
    if len(refs) == 1 and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}", text):
        return refs[0].name, None
    raise ValueError(f"broker.{what} = {text!r}: KEDA reads the broker address from one environment variable; "
                     "write it as a literal or as a single ${VAR} / ${VAR:-default} reference")


def keda_reads(topology: Topology) -> set[str]:
    """The variable a ScaledObject trigger reads the broker address from, if any: required whatever its
    default, as KEDA knows no topology defaults."""
    if topology.broker is BrokerKind.KAFKA:
        name, _ = whole_reference(topology.kafka.bootstrap_servers, "kafka.bootstrap_servers")
    else:
        name, _ = whole_reference(topology.rabbitmq.url, "rabbitmq.url")
    return {name} if name else set()


def max_replicas(topology: Topology, group: ConsumerGroup) -> int:
    """The most pods KEDA scales `group` to: one per partition (Kafka), per queue consumer (RabbitMQ)."""
    if topology.broker is BrokerKind.KAFKA:
        return max(MIN_REPLICAS, sum(topology.event(s.event).kafka.partitions * len(s.topics)
                                     for s in group.subscriptions))
    per_queue = 1 if group.rabbitmq.single_active_consumer else RABBIT_CONSUMERS_PER_QUEUE
    return max(MIN_REPLICAS, len(group.rabbitmq.queues) * per_queue)


def kafka_trigger(topology: Topology, group: ConsumerGroup) -> tuple[list[dict[str, object]], int, set[str]]:
    env, literal = whole_reference(topology.kafka.bootstrap_servers, "kafka.bootstrap_servers")
    metadata: dict[str, str] = {
        "consumerGroup": group.kafka.group_id,
        "lagThreshold": str(max(1, group.alerts.lag_events)),
        "offsetResetPolicy": "earliest",  # as `topo run` starts a new group
        "allowIdleConsumers": "false",
        "scaleToZeroOnInvalidOffset": "false",
    }
    if env is not None:
        metadata["bootstrapServersFromEnv"] = env
    else:
        metadata["bootstrapServers"] = str(literal)
    partitions = sum(topology.event(s.event).kafka.partitions * len(s.topics) for s in group.subscriptions)
    trigger: dict[str, object] = {"type": "kafka", "name": "consumer-lag", "metadata": metadata}
    return [trigger], max(MIN_REPLICAS, partitions), {env} if env else set()


def rabbit_triggers(topology: Topology, group: ConsumerGroup) -> tuple[list[dict[str, object]], int, set[str]]:
    env, literal = whole_reference(topology.rabbitmq.url, "rabbitmq.url")
    queues = group.rabbitmq.queues
    per_queue = max(1, math.ceil(group.alerts.lag_events / max(1, len(queues))))
    triggers: list[dict[str, object]] = []
    for index, queue in enumerate(queues):
        metadata = {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": str(per_queue)}
        if env is not None:
            metadata["hostFromEnv"] = env
        else:
            metadata["host"] = str(literal)
        triggers.append({"type": "rabbitmq", "name": f"queue-{index}", "metadata": metadata})
    cap = len(queues) * (1 if group.rabbitmq.single_active_consumer else RABBIT_CONSUMERS_PER_QUEUE)
    return triggers, max(MIN_REPLICAS, cap), {env} if env else set()


def deploy_settings(topology: Topology) -> DeploySettings:
    return topology.deploy or DeploySettings(image=default_image(topology.name), namespace=None)


def metadata(topology: Topology, name: str, component: str) -> dict[str, object]:
    """`metadata` of a workload resource: name, namespace (when the topology sets one), labels."""
    namespace = deploy_settings(topology).namespace
    return {"name": name, **({"namespace": namespace} if namespace else {}), "labels": labels(topology, component)}


def labels(topology: Topology, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "topo", "app.kubernetes.io/instance": k8s_name(topology.name),
            "app.kubernetes.io/component": k8s_name(component), "app.kubernetes.io/managed-by": "topo"}


def emit(topology: Topology) -> dict[str, str]:
    image = deploy_settings(topology).image
    files = {}
    for group in topology.groups:
        if topology.broker is BrokerKind.KAFKA:
            triggers, max_replicas, keda_reads = kafka_trigger(topology, group)
        else:
            triggers, max_replicas, keda_reads = rabbit_triggers(topology, group)
        name = k8s_name(topology.name, group.name)
        files[f"k8s/deploy/{group.name}.yaml"] = render(
            GROUP_TEMPLATE, topology=topology.name, group=group.name, name=name,
            metadata=metadata(topology, name, group.name), labels=labels(topology, group.name), image=image,
            args=["run", "--group", group.name, "--topology", TOPOLOGY_PATH, "--metrics-port", str(METRICS_PORT),
                  "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)],
            env=env(topology, group, keda_reads), port=METRICS_PORT, grace=SHUTDOWN_TIMEOUT + 15,
            min_replicas=MIN_REPLICAS, max_replicas=max_replicas, triggers=triggers,
            polling_interval=POLLING_INTERVAL, cooldown_period=COOLDOWN_PERIOD)
    name = k8s_name(topology.name, "lag-monitor")
    files["k8s/monitor/lag-monitor.yaml"] = render(
        MONITOR_TEMPLATE, topology=topology.name, metadata=metadata(topology, name, "lag-monitor"),
        labels=labels(topology, "lag-monitor"), image=image,
        args=["monitor", "--topology", TOPOLOGY_PATH, "--port", str(MONITOR_PORT)],
        env=env(topology, None, set()), port=MONITOR_PORT)
    return files
