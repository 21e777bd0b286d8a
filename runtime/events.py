"""Loads the compiled topology and its generated event classes.

The classes live in `generated/python/<topology.events_module>.py`. The runtime puts that folder
on `sys.path` and imports the module by name, so a handler that does `import explorer_events`
gets the very same classes (isinstance holds between the runtime's envelopes and the handler's
imports).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from topo.core.model import Topology

DEFAULT_TOPOLOGY = Path("generated/topology.json")


class EventsModuleError(RuntimeError):
    """The generated event module is missing or does not match the topology."""


def load_topology(path: Path | str = DEFAULT_TOPOLOGY) -> Topology:
    """The compiled topology (`generated/topology.json`, written by `topo generate`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: compiled topology not found; run `topo generate` first "
                                "(or pass --topology PATH)") from None
    return Topology.model_validate_json(text)


def load_events_module(topology: Topology, generated_dir: Path | str) -> ModuleType:
    """Import `<generated_dir>/python/<topology.events_module>.py` by its module name."""
    folder = (Path(generated_dir) / "python").resolve()
    name = topology.events_module
    file = folder / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = Path(getattr(loaded, "__file__", "") or "").resolve()
        if origin != file:
            raise EventsModuleError(f"module {name} is already imported from {origin}, not {file}; "
                                    "import the generated module from one place only")
        module = loaded
    else:
        if not file.is_file():
            raise EventsModuleError(f"{file}: generated event classes not found; run `topo generate`")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        module = importlib.import_module(name)
    declared = {event.name for event in topology.events}
    generated = set(getattr(module, "ENVELOPES", {}))
    if declared != generated:
        raise EventsModuleError(f"{file} is stale: it defines {sorted(generated)} but the topology declares "
                                f"{sorted(declared)}; run `topo generate`")
    return module


@dataclass(frozen=True)
class EventClasses:
    """The generated classes of one topology, by event type."""

    module: ModuleType
    payloads: dict[str, type[BaseModel]]
    envelopes: dict[str, type[BaseModel]]
    metadata: type[BaseModel]

    @classmethod
    def from_module(cls, module: ModuleType) -> EventClasses:
        return cls(module=module, payloads=dict(module.EVENT_TYPES), envelopes=dict(module.ENVELOPES),
                   metadata=module.Metadata)

    @classmethod
    def load(cls, topology: Topology, generated_dir: Path | str) -> EventClasses:
        return cls.from_module(load_events_module(topology, generated_dir))

    def event_type_of(self, payload: Any) -> str:
        """The event type of a payload instance; TypeError for anything else."""
        event_type = getattr(type(payload), "EVENT_TYPE", None)
        if not isinstance(event_type, str) or self.payloads.get(event_type) is not type(payload):
            raise TypeError(f"{type(payload).__qualname__} is not a payload class of the generated module "
                            f"{self.module.__name__}; declared event types: {', '.join(sorted(self.payloads))}")
        return event_type


def key_attribute(payload_class: type[BaseModel], key_field: str) -> str:
    """Python attribute of the payload field named `key_field` in JSON (aliases like `from`)."""
    for attribute, info in payload_class.model_fields.items():
        if attribute == key_field or info.alias == key_field:
            return attribute
    raise EventsModuleError(f"{payload_class.__qualname__} has no key field {key_field!r}; run `topo generate`")
