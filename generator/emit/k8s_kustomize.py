"""k8s/kustomization.yaml: every generated Kubernetes resource of the topology's broker, in one.

`kubectl apply -k generated/k8s` applies the ConfigMap, the broker objects of `broker.kind`
(Strimzi KafkaTopics, or RabbitMQ Exchanges, Queues and Bindings), a Deployment and ScaledObject
per group, the lag monitor with its Service, and the Prometheus Operator monitors. The Secret is
not among them: an overlay adds it from the user's secrets.env (docs/deploy.md), so no credential
ever sits in generated/.
"""

from __future__ import annotations

from topo.core.model import BrokerKind, Topology
from topo.generator.emit import autoscaling, k8s_config, k8s_scrape, kafka, rabbitmq
from topo.generator.emit.k8s_env import secret_name
from topo.generator.render import render

KUSTOMIZATION = "k8s/kustomization.yaml"
ROOT = "k8s/"


def resources(topology: Topology) -> list[str]:
    """Paths under k8s/ of every resource file the kustomization applies, sorted."""
    broker = [kafka.MANIFESTS] if topology.broker is BrokerKind.KAFKA else [
        rabbitmq.EXCHANGES, rabbitmq.QUEUES, rabbitmq.BINDINGS]
    paths = [k8s_config.CONFIG_MAP, *broker, *autoscaling.emit(topology), k8s_scrape.SERVICE,
             k8s_scrape.PROMETHEUS_OPERATOR]
    return sorted(path.removeprefix(ROOT) for path in paths)


def emit(topology: Topology) -> dict[str, str]:
    return {KUSTOMIZATION: render("k8s/kustomization.yaml.j2", topology=topology.name,
                                  resources=resources(topology), secret=secret_name(topology))}
