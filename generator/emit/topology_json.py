"""generated/topology.json: the compiled topology the runtime and `topo plan` run from.

It records its source (`"source": {"file": "topology.yaml", "sha256": ...}`, the file's name only,
so output does not depend on the machine): commands given the JSON warn when that YAML changed.
"""

from __future__ import annotations

from topo.core.model import Topology

PATH = "topology.json"


def emit(topology: Topology) -> dict[str, str]:
    return {PATH: topology.model_dump_json(indent=2) + "\n"}
