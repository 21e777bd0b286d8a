"""RabbitMQ provisioning artifacts: definitions.json, provision.sh and messaging-topology-operator
manifests (Exchange, Queue, Binding).

Every exchange, queue, binding and argument comes from `topo.core.desired`, the same
resources `topo plan` / `topo apply` work from. No policies are used: every setting is a queue
or exchange argument, marked with `x-topo-owner`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import urllib.parse
from typing import Any

from topo.core.connect import env_setting, without_userinfo
from topo.core.desired import (
    BindingSpec,
    definitions,
    rabbit_bindings,
    rabbit_exchanges,
    rabbit_queues,
)
from topo.core.k8s import dns_label, label_value, resource_names
from topo.core.model import Topology
from topo.generator.jsonout import pretty, quoted
from topo.generator.render import render

DEFINITIONS = "rabbitmq/definitions.json"
SCRIPT = "rabbitmq/provision.sh"
EXCHANGES = "k8s/rabbitmq/exchanges.yaml"
QUEUES = "k8s/rabbitmq/queues.yaml"
BINDINGS = "k8s/rabbitmq/bindings.yaml"
OPERATOR_API_VERSION = "rabbitmq.com/v1beta1"
DEFAULT_VHOST = "/"
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:15672"


def path_segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _script(topology: Topology) -> str:
    variable, default = env_setting(topology.rabbitmq.management_url, "RABBITMQ_MANAGEMENT_URL")
    # Credentials never go into the file, not even a default's `guest:guest@`.
    default_url = without_userinfo(default) if default else DEFAULT_MANAGEMENT_URL
    exchanges = [
        {"name": shlex.quote(e.name), "path": shlex.quote(path_segment(e.name)),
         "body": shlex.quote(_compact({"type": e.type, "durable": e.durable, "auto_delete": e.auto_delete,
                                       "internal": e.internal, "arguments": dict(e.arguments)}))}
        for e in rabbit_exchanges(topology)
    ]
    queues = [
        {"name": shlex.quote(q.name), "path": shlex.quote(path_segment(q.name)),
         "body": shlex.quote(_compact({"durable": q.durable, "auto_delete": q.auto_delete,
                                       "arguments": dict(q.arguments)}))}
        for q in rabbit_queues(topology)
    ]
    bindings = [
        {"describe": shlex.quote(b.describe()),
         "path": shlex.quote(f"e/{path_segment(b.source)}/{b.destination_type[0]}/{path_segment(b.destination)}"),
         "body": shlex.quote(_compact({"routing_key": b.routing_key, "arguments": dict(b.arguments)}))}
        for b in rabbit_bindings(topology)
    ]
    return render(
        "rabbitmq/provision.sh.j2",
        topology=topology.name,
        url_variable=variable,
        default_url=shlex.quote(default_url),
        exchanges=exchanges,
        queues=queues,
        bindings=bindings,
    )


def _binding_resource_name(binding: BindingSpec) -> str:
    digest = hashlib.sha256("\0".join(binding.key).encode()).hexdigest()[:8]
    head = dns_label(f"{binding.source}-{binding.destination}")[: 63 - 9].rstrip("-")
    return f"{head}-{digest}"


def _manifests(topology: Topology) -> dict[str, str]:
    common = {
        "api_version": OPERATOR_API_VERSION,
        "topology": topology.name,
        "cluster": json.dumps(dns_label(topology.name)),
        "part_of": json.dumps(label_value(topology.name)),
        "vhost": json.dumps(DEFAULT_VHOST),
    }
    exchanges = rabbit_exchanges(topology)
    queues = rabbit_queues(topology)
    bindings = rabbit_bindings(topology)
    exchange_names = resource_names(e.name for e in exchanges)
    queue_names = resource_names(q.name for q in queues)
    return {
        EXCHANGES: render("k8s/rabbitmq/exchanges.yaml.j2", **common, exchanges=[
            {"resource": exchange_names[e.name], "name": quoted(e.name), "type": quoted(e.type),
             "durable": json.dumps(e.durable), "auto_delete": json.dumps(e.auto_delete),
             "arguments": json.dumps(dict(e.arguments), sort_keys=True)}
            for e in exchanges]),
        QUEUES: render("k8s/rabbitmq/queues.yaml.j2", **common, queues=[
            # The operator sets x-queue-type from `type`; the arguments carry the rest.
            {"resource": queue_names[q.name], "name": quoted(q.name), "type": quoted(q.queue_type),
             "durable": json.dumps(q.durable), "auto_delete": json.dumps(q.auto_delete),
             "arguments": json.dumps({k: v for k, v in q.arguments.items() if k != "x-queue-type"},
                                     sort_keys=True)}
            for q in queues]),
        BINDINGS: render("k8s/rabbitmq/bindings.yaml.j2", **common, bindings=[
            {"resource": _binding_resource_name(b), "source": quoted(b.source),
             "destination": quoted(b.destination), "destination_type": quoted(b.destination_type),
             "routing_key": quoted(b.routing_key), "arguments": json.dumps(dict(b.arguments), sort_keys=True)}
            for b in bindings]),
    }


def emit(topology: Topology) -> dict[str, str]:
    return {
        DEFINITIONS: pretty(definitions(topology, DEFAULT_VHOST)),
        SCRIPT: _script(topology),
        **_manifests(topology),
    }
