"""k8s/deploy/<group>.yaml (Deployment + KEDA ScaledObject per group) and k8s/monitor/lag-monitor.yaml.

Each group runs as `topo run --group NAME` from the image DEFAULT_IMAGE (override it with a
kustomize `images:` entry), reading the compiled topology baked into the image at
TOPOLOGY_PATH. Connection settings reach the container as environment variables named by the
topology's `${VAR}` references, each taken from the Secret `<topology>-topo-secrets`
(credentials: SASL settings and RabbitMQ URLs, which carry a password) or the ConfigMap
`<topology>-topo-config` (everything else); never as values. A reference with a default is
optional (the default applies when the key is absent); the broker address KEDA reads is required.

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

import hashlib
import math
import re
from importlib.metadata import PackageNotFoundError, version

from topo.core.interpolate import references
from topo.core.model import BrokerKind, ConsumerGroup, Topology
from topo.generator.render import render

GROUP_TEMPLATE = "k8s/deploy/group.yaml.j2"
MONITOR_TEMPLATE = "k8s/deploy/monitor.yaml.j2"
IMAGE_REPOSITORY = "ghcr.io/topo-events/topo"
TOPOLOGY_PATH = "/app/generated/topology.json"
METRICS_PORT = 9100
MONITOR_PORT = 9400
SHUTDOWN_TIMEOUT = 30  # seconds, `topo run --shutdown-timeout`
RABBIT_CONSUMERS_PER_QUEUE = 4
MIN_REPLICAS = 1  # never zero: a group without members is an alert (TopoConsumerDown)
POLLING_INTERVAL = 15
COOLDOWN_PERIOD = 300


def default_image() -> str:
    try:
        tag = version("topo-events")
    except PackageNotFoundError:
        tag = "latest"
    return f"{IMAGE_REPOSITORY}:{tag}"


def k8s_name(*parts: str) -> str:
    """A DNS-1123 label (what Deployments and ScaledObjects are named by), hashed when too long."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(text) <= 63:
        return text
    return f"{text[:54].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class EnvPlan:
    """Environment variables a group's container needs, each from the Secret or the ConfigMap."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.secret = k8s_name(topology.name, "topo-secrets")
        self.config_map = k8s_name(topology.name, "topo-config")

    def settings(self, group: ConsumerGroup | None) -> list[tuple[str, bool]]:
        """(setting text, is a credential) the process expands at connect time."""
        t = self.topology
        items: list[tuple[str, bool]] = []
        if t.broker is BrokerKind.KAFKA:
            items += [(t.kafka.bootstrap_servers, False), (t.kafka.security_protocol, False),
                      (t.kafka.sasl_mechanism, False), (t.kafka.sasl_username, True), (t.kafka.sasl_password, True)]
        else:
            items += [(t.rabbitmq.url, True), (t.rabbitmq.management_url, True)]
        if group is not None and group.dedup.path:
            items.append((group.dedup.path, False))
        return items

    def env(self, group: ConsumerGroup | None, required: set[str]) -> list[dict[str, object]]:
        seen: dict[str, dict[str, object]] = {}
        for text, credential in self.settings(group):
            for ref in references(text):
                if ref.name in seen:
                    continue
                source = "secretKeyRef" if credential else "configMapKeyRef"
                name = self.secret if credential else self.config_map
                optional = ref.default is not None and ref.name not in required
                seen[ref.name] = {"name": ref.name,
                                  "valueFrom": {source: {"name": name, "key": ref.name, "optional": optional}}}
        return [seen[name] for name in sorted(seen)]


def whole_reference(text: str, what: str) -> tuple[str | None, str | None]:
    """(env var, literal) for a setting KEDA must read: a literal, or exactly one `${VAR...}`."""
    refs = references(text)
    if not refs:
        return None, text
    if len(refs) == 1 and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}", text):
        return refs[0].name, None
    raise ValueError(f"broker.{what} = {text!r}: KEDA reads the broker address from one environment variable; "
                     "write it as a literal or as a single ${VAR} / ${VAR:-default} reference")


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


def labels(topology: Topology, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "topo", "app.kubernetes.io/instance": k8s_name(topology.name),
            "app.kubernetes.io/component": k8s_name(component), "app.kubernetes.io/managed-by": "topo"}


def emit(topology: Topology) -> dict[str, str]:
    plan = EnvPlan(topology)
    image = default_image()
    files = {}
    for group in topology.groups:
        if topology.broker is BrokerKind.KAFKA:
            triggers, max_replicas, required = kafka_trigger(topology, group)
        else:
            triggers, max_replicas, required = rabbit_triggers(topology, group)
        files[f"k8s/deploy/{group.name}.yaml"] = render(
            GROUP_TEMPLATE, topology=topology.name, group=group.name, name=k8s_name(topology.name, group.name),
            labels=labels(topology, group.name), image=image,
            args=["run", "--group", group.name, "--topology", TOPOLOGY_PATH, "--metrics-port", str(METRICS_PORT),
                  "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)],
            env=plan.env(group, required), port=METRICS_PORT, grace=SHUTDOWN_TIMEOUT + 15,
            min_replicas=MIN_REPLICAS, max_replicas=max_replicas, triggers=triggers,
            polling_interval=POLLING_INTERVAL, cooldown_period=COOLDOWN_PERIOD)
    files["k8s/monitor/lag-monitor.yaml"] = render(
        MONITOR_TEMPLATE, topology=topology.name, name=k8s_name(topology.name, "lag-monitor"),
        labels=labels(topology, "lag-monitor"), image=image,
        args=["monitor", "--topology", TOPOLOGY_PATH, "--port", str(MONITOR_PORT)],
        env=plan.env(None, set()), port=MONITOR_PORT)
    return files
