"""Emitters: pure functions from the resolved model to generated files.

Each module listed in EMITTERS defines `emit(topology: Topology) -> dict[str, str]`, mapping a
path relative to the output directory to the file's text. Emitters do no IO.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from topo.core.model import Topology

Files = dict[str, str]
Emitter = Callable[[Topology], Files]

EMITTERS: tuple[str, ...] = (
    "topology_json",
    "events",
    "schemas",
    "kafka",
    "rabbitmq",
    "prometheus",
    "grafana",
    "autoscaling",
    "k8s_config",
    "k8s_scrape",
    "k8s_kustomize",
    "asyncapi",
)


def emitter(name: str) -> Emitter:
    return cast(Emitter, importlib.import_module(f"{__name__}.{name}").emit)


def emit_all(topology: Topology) -> Files:
    files: Files = {}
    owners: dict[str, str] = {}
    for name in EMITTERS:
        for path, text in emitter(name)(topology).items():
            if path in owners:
                raise RuntimeError(f"emitters {owners[path]} and {name} both write {path}")
            owners[path] = name
            files[path] = text
    return dict(sorted(files.items()))
