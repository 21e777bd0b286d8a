"""The environment of the generated workloads: which variable comes from the ConfigMap or the Secret.

Connection settings keep their `${VAR:-default}` references (topo.core.interpolate); in
Kubernetes each referenced variable arrives from the ConfigMap `<topology>-topo-config` or, for
credentials (SASL settings, RabbitMQ and PostgreSQL URLs, which carry a password), from the Secret
`<topology>-topo-secrets`; never as a value in a manifest. A reference with a default is an
optional key (absent, the default applies), one without is required; so is a variable KEDA reads
(the broker address of its trigger): KEDA knows no topology defaults.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from topo.core.interpolate import references
from topo.core.model import BrokerKind, ConsumerGroup, Topology


def k8s_name(*parts: str) -> str:
    """A DNS-1123 label (what Deployments and ScaledObjects are named by), hashed when too long."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(text) <= 63:
        return text
    return f"{text[:54].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def secret_name(topology: Topology) -> str:
    return k8s_name(topology.name, "topo-secrets")


def config_map_name(topology: Topology) -> str:
    return k8s_name(topology.name, "topo-config")


@dataclass(frozen=True)
class EnvKey:
    """One variable a workload reads: where it comes from and its default (None: required)."""

    name: str
    secret: bool
    default: str | None

    @property
    def required(self) -> bool:
        return self.default is None


def settings(topology: Topology, group: ConsumerGroup | None) -> list[tuple[str, bool]]:
    """(setting text, is a credential) a process of the group (None: the monitor) expands at connect time."""
    items: list[tuple[str, bool]] = []
    if topology.broker is BrokerKind.KAFKA:
        kafka = topology.kafka
        items += [(kafka.bootstrap_servers, False), (kafka.security_protocol, False), (kafka.sasl_mechanism, False),
                  (kafka.sasl_username, True), (kafka.sasl_password, True)]
    else:
        items += [(topology.rabbitmq.url, True), (topology.rabbitmq.management_url, True)]
    if group is not None and group.dedup.path:
        items.append((group.dedup.path, False))
    if group is not None and group.dedup.dsn:
        items.append((group.dedup.dsn, True))  # a database URL carries its password
    return items


def keys(topology: Topology, group: ConsumerGroup | None) -> list[EnvKey]:
    """The variables one workload reads, sorted by name; the first reference of a name decides its default."""
    found: dict[str, EnvKey] = {}
    for text, credential in settings(topology, group):
        for ref in references(text):
            found.setdefault(ref.name, EnvKey(ref.name, credential, ref.default))
    return [found[name] for name in sorted(found)]


def all_keys(topology: Topology) -> list[EnvKey]:
    """Every variable any generated workload reads (the ConfigMap's and the Secret's keys)."""
    found: dict[str, EnvKey] = {}
    for group in (None, *topology.groups):
        for key in keys(topology, group):
            found.setdefault(key.name, key)
    return [found[name] for name in sorted(found)]


def env(topology: Topology, group: ConsumerGroup | None, keda_reads: set[str]) -> list[dict[str, object]]:
    """The container's `env`: every variable from the ConfigMap or the Secret, by key."""
    entries: list[dict[str, object]] = []
    for key in keys(topology, group):
        source = "secretKeyRef" if key.secret else "configMapKeyRef"
        name = secret_name(topology) if key.secret else config_map_name(topology)
        optional = not key.required and key.name not in keda_reads
        entries.append({"name": key.name, "valueFrom": {source: {"name": name, "key": key.name, "optional": optional}}})
    return entries
