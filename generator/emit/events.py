"""Placeholder until its owner lands it."""

from __future__ import annotations

from topo.generator.model import Topology


def emit(topology: Topology) -> dict[str, str]:
    return {}
