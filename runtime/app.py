"""The Python API: one object per service process.

    app = Runtime.from_generated("generated", broker="kafka", producer="indexer")
    app.publisher().publish(BlockNew(chain_id=1, ...))

    @app.handler("analytics", "block.new")
    def on_block(event: BlockNewEvent) -> None: ...

    app.runner("analytics").run()      # until stop() / SIGTERM (see topo run)

`topo run` builds its own Runtime. A module it imports with `--import` registers handlers on a
Runtime (or a bare `HandlerRegistry`) of its own; `topo run` adopts them from every such object
the module holds at its top level (`Runtime.adopt`), so the decorator above works unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from topo.core.model import Topology
from topo.runtime.dedup import ProcessedStore, store_for
from topo.runtime.events import EventClasses, load_topology
from topo.runtime.handlers import Handler, HandlerRegistry
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.pacing import DEFAULT_THREADS
from topo.runtime.publisher import Publisher
from topo.runtime.runner import GroupRunner
from topo.runtime.tracing import Tracing
from topo.runtime.transport import create
from topo.runtime.transport.base import Transport


class Runtime:
    def __init__(self, topology: Topology, classes: EventClasses, transport: Transport, producer: str = "",
                 metrics: RuntimeMetrics | None = None, state_dir: Path | None = None, tracer_provider: Any = None
                 ) -> None:
        self.topology = topology
        self.classes = classes
        self.transport = transport
        self.producer = producer or (topology.producers[0] if topology.producers else "topo")
        self.metrics = metrics
        self.state_dir = state_dir
        self.registry = HandlerRegistry()
        self._publisher: Publisher | None = None
        # OpenTelemetry spans with this provider, or the global one once configured (topo.runtime.tracing).
        self.tracing = Tracing.detect(transport.kind, tracer_provider)
        self._stores: list[ProcessedStore] = []

    @classmethod
    def from_generated(cls, generated_dir: Path | str = "generated", broker: str | None = None,
                       producer: str = "", metrics: RuntimeMetrics | None = None, tracer_provider: Any = None,
                       **transport_options: Any) -> Runtime:
        """From `topo generate` output: `<dir>/topology.json` and `<dir>/python/<module>.py`."""
        folder = Path(generated_dir)
        return cls.from_topology(load_topology(folder / "topology.json"), folder, broker, producer, metrics,
                                 tracer_provider, **transport_options)

    @classmethod
    def from_topology(cls, topology: Topology, generated_dir: Path | str, broker: str | None = None,
                      producer: str = "", metrics: RuntimeMetrics | None = None, tracer_provider: Any = None,
                      **transport_options: Any) -> Runtime:
        """From an already loaded topology (e.g. compiled from topology.yaml in memory) and the folder of
        `topo generate` output holding its event classes (`<dir>/python/<module>.py`)."""
        classes = EventClasses.load(topology, generated_dir)
        kind = broker or os.environ.get("TOPO_BROKER") or topology.broker.value
        return cls(topology, classes, create(kind, topology, **transport_options), producer, metrics,
                   tracer_provider=tracer_provider)

    def handler(self, group: str, event: str | None = None) -> Any:
        """Decorator registering a handler for `group` (all its events, or one `event`)."""
        self.topology.group(group)
        if event is not None:
            self.topology.event(event)
        return self.registry.handler(group, event)

    def register(self, group: str, function: Handler, event: str | None = None) -> None:
        self.topology.group(group)
        self.registry.register(group, function, event)

    def adopt(self, source: ModuleType | Runtime | HandlerRegistry) -> int:
        """Take over the handlers registered on `source`: a Runtime, a HandlerRegistry, or a module's
        top-level ones (`registries_in`); how many registrations were adopted."""
        if isinstance(source, ModuleType):
            return sum(self.adopt(registry) for registry in registries_in(source))
        registry = source.registry if isinstance(source, Runtime) else source
        return 0 if registry is self.registry else self.registry.update(registry)

    def publisher(self) -> Publisher:
        """The process's publisher (created on first use; thread-safe)."""
        if self._publisher is None:
            self._publisher = Publisher(self.topology, self.classes, self.transport.open_publisher(self.producer),
                                        self.producer, self.metrics, self.tracing)
        return self._publisher

    def runner(self, group: str, store: ProcessedStore | None = None, concurrency: int | None = None,
               shutdown_timeout: float = 30.0, time_scale: float = 1.0, client_id: str = "", state: Any = None
               ) -> GroupRunner:
        """A runner for `group` with its handlers resolved now (errors name what is missing)."""
        model = self.topology.group(group)
        handlers = self.registry.resolve(model)
        if store is None:
            threads = DEFAULT_THREADS if concurrency is None else concurrency  # the default may reach its threads
            store = store_for(model, self.state_dir, workers=max(1, threads))
            self._stores.append(store)  # closed with the runtime (a PostgreSQL store holds a pool)
        return GroupRunner(self.topology, model, self.classes, self.transport, handlers, store=store,
                           metrics=self.metrics, concurrency=concurrency, shutdown_timeout=shutdown_timeout,
                           time_scale=time_scale, client_id=client_id, state=state, tracing=self.tracing)

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        self.transport.close()


def registries_in(module: ModuleType) -> list[HandlerRegistry]:
    """The handler registries of the Runtime and HandlerRegistry objects `module` holds at its top level."""
    found: list[HandlerRegistry] = []
    for value in vars(module).values():
        registry = value.registry if isinstance(value, Runtime) else value
        if isinstance(registry, HandlerRegistry) and all(registry is not seen for seen in found):
            found.append(registry)
    return found
