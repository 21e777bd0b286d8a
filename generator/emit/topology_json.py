"""generated/topology.json: the compiled topology the runtime and `topo plan` run from."""

from __future__ import annotations

from topo.core.model import Topology

PATH = "topology.json"


def emit(topology: Topology) -> dict[str, str]:
    return {PATH: topology.model_dump_json(indent=2) + "\n"}
