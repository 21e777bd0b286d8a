"""k8s/monitor/service.yaml and prometheus-operator.yaml: how Prometheus reaches the metrics.

The lag monitor gets a Service (what a static scrape config or a ServiceMonitor targets); the
`topo run` pods are scraped directly (a PodMonitor, or the prometheus.io/* pod annotations),
since every replica has its own series. The PodMonitor leaves the monitor's pod out: the
ServiceMonitor already scrapes it.
"""

from __future__ import annotations

from topo.core.model import Topology
from topo.generator.emit.autoscaling import MONITOR_PORT, labels, metadata
from topo.generator.emit.k8s_env import k8s_name
from topo.generator.render import render

SERVICE = "k8s/monitor/service.yaml"
PROMETHEUS_OPERATOR = "k8s/monitor/prometheus-operator.yaml"
MONITOR_COMPONENT = "lag-monitor"
SCRAPE_INTERVAL = "30s"


def emit(topology: Topology) -> dict[str, str]:
    monitor = k8s_name(topology.name, MONITOR_COMPONENT)
    monitor_labels = labels(topology, MONITOR_COMPONENT)
    instance = {key: value for key, value in monitor_labels.items() if key != "app.kubernetes.io/component"}
    return {
        SERVICE: render("k8s/monitor/service.yaml.j2", topology=topology.name,
                        metadata=metadata(topology, monitor, MONITOR_COMPONENT), selector=monitor_labels,
                        port=MONITOR_PORT),
        PROMETHEUS_OPERATOR: render(
            "k8s/monitor/prometheus-operator.yaml.j2", topology=topology.name,
            service_monitor=metadata(topology, monitor, MONITOR_COMPONENT),
            pod_monitor=metadata(topology, k8s_name(topology.name, "workers"), "workers"),
            monitor_labels=monitor_labels, instance_labels=instance, monitor_component=MONITOR_COMPONENT,
            interval=SCRAPE_INTERVAL),
    }
