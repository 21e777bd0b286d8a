"""k8s/config/: the ConfigMap every generated workload reads, and the Secret's key list.

* `configmap.yaml`: ConfigMap `<topology>-topo-config` holding every non-credential variable the
  workloads reference, each set to its topology default, so the manifests apply as generated and
  the values to change for a cluster sit in one place (a kustomize patch, docs/deploy.md). A
  variable without a default is required: it is left out and named in the header; the pods
  report the missing key until an overlay supplies it.
* `secrets.env.example`: the keys of the Secret `<topology>-topo-secrets` (credentials), without
  values. No Secret is generated: an overlay's `secretGenerator` builds it from the user's own
  copy of this file, which never enters generated/. Optional keys are commented out (their
  default applies); required ones are listed bare, so a forgotten one stands out.
"""

from __future__ import annotations

from topo.core.model import Topology
from topo.generator.emit.autoscaling import keda_reads, metadata
from topo.generator.emit.k8s_env import EnvKey, all_keys, config_map_name, secret_name
from topo.generator.render import render

CONFIG_MAP = "k8s/config/configmap.yaml"
SECRET_KEYS = "k8s/config/secrets.env.example"


def emit(topology: Topology) -> dict[str, str]:
    keys = all_keys(topology)
    config = [key for key in keys if not key.secret]
    secrets: list[EnvKey] = [key for key in keys if key.secret]
    files = {CONFIG_MAP: render(
        "k8s/config/configmap.yaml.j2", topology=topology.name,
        metadata=metadata(topology, config_map_name(topology), "config"),
        data={key.name: key.default for key in config if not key.required},
        required=[key.name for key in config if key.required], secret=secret_name(topology))}
    if secrets:
        needed = keda_reads(topology)
        files[SECRET_KEYS] = render(
            "k8s/config/secrets.env.example.j2", topology=topology.name, secret=secret_name(topology),
            keys=[(key.name, key.required or key.name in needed, key.name in needed) for key in secrets])
    return files
