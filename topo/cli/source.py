"""Where `topo plan` / `topo apply` take the topology from: generated/topology.json or a topology.yaml."""

from __future__ import annotations

from pathlib import Path

import pydantic

from topo.core.model import Topology
from topo.generator.load import load_topology

DEFAULT_TOPOLOGY = "generated/topology.json"


class TopologySourceError(RuntimeError):
    pass


def load(path: str | Path) -> Topology:
    """The resolved topology: compiled JSON as `topo generate` writes it, or YAML (validated first)."""
    file = Path(path)
    if not file.exists():
        hint = ("run `topo generate topology.yaml` first, or pass --topology topology.yaml"
                if str(path) == DEFAULT_TOPOLOGY else "pass the path of a topology.yaml or topology.json")
        raise TopologySourceError(f"{path}: no such file; {hint}")
    if file.suffix == ".json":
        try:
            return Topology.model_validate_json(file.read_text())
        except pydantic.ValidationError as exc:
            raise TopologySourceError(f"{path}: not a compiled topology ({exc.error_count()} error(s), first: "
                                      f"{exc.errors()[0]['msg']}); regenerate it with `topo generate`") from exc
    return load_topology(file)
