"""Handlers: what a consumer group runs for each event, and what it receives.

A handler is a function `handler(event)` or `handler(event, context)` (plain or `async def`);
`event` is the typed envelope (e.g. `BlockNewEvent`, with `.payload` a `BlockNew`). It succeeds
by returning and fails by raising. Handlers are named in topology.yaml as `module:function` (per group, or per
subscription) or registered in Python with `HandlerRegistry.handler(group, event=None)` (also
`Runtime.handler`). `topo run --import MODULE` adopts the registrations of every `Runtime` and
`HandlerRegistry` MODULE holds at its top level (`topo.runtime.app.registries_in`).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel

from topo.core.model import ConsumerGroup
from topo.runtime.imports import ImportFailure, did_you_mean, import_user_module, public_callables
from topo.runtime.transport.base import DeliveryCallback

if TYPE_CHECKING:  # the publisher imports tracing, which imports this module
    from topo.runtime.outbox import Outbox
    from topo.runtime.publisher import Published

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a handler may want besides the event (only passed to two-argument handlers)."""

    group: str
    event_type: str
    chain_id: int
    topic: str  # Kafka topic / RabbitMQ routing key of the event
    partition: int  # Kafka partition / RabbitMQ work-queue index
    offset: int  # Kafka offset / RabbitMQ delivery tag
    attempt: int  # 1 for the first attempt, 2 for the first retry, ...
    # The processed-store transaction committed together with the dedup mark (SQLite store: a
    # sqlite3.Connection inside BEGIN IMMEDIATE; memory store: None).
    transaction: Any
    # The W3C trace context the event carries (headers `traceparent`, `tracestate`), or None.
    traceparent: str | None = None
    tracestate: str | None = None
    outbox: Outbox | None = None  # where `publish` collects this call's derived events

    def publish(self, payload: BaseModel | Mapping[str, Any], chain_id: int | None = None, *,
                event_type: str | None = None, event_id: UUID | None = None,
                on_delivery: DeliveryCallback | None = None, headers: Mapping[str, str] | None = None
                ) -> Published:
        """Publish a derived event: the arguments, checks and result of `Publisher.publish`, for an
        event type in the group's `publishes`. It is sent only if the handler returns, with the
        input's acknowledgement (exactly-once Kafka group: in its transaction); its `event_id` is
        derived from the input's unless given; `headers` default to the input's trace context;
        `on_delivery` runs on the consume loop's thread. See `topo.runtime.outbox`."""
        if self.outbox is None:
            from topo.runtime.publisher import PublishError  # here: the publisher imports this module

            raise PublishError(f"this context of group {self.group!r} was not made by the runtime: it cannot publish")
        return self.outbox.publish(payload, chain_id, event_type=event_type, event_id=event_id,
                                   on_delivery=on_delivery, headers=headers)


@dataclass(frozen=True, slots=True)
class BoundHandler:
    function: Handler
    wants_context: bool
    name: str


class HandlerError(ImportFailure):
    """A handler cannot be found or imported; the message names the group and the fix."""


def import_handler(path: str, where: str = "handler") -> Handler:
    """`package.module:function` (the attribute may be dotted: `module:Class.method`). `where` names the
    setting that holds `path` (e.g. `consumer_groups.indexer.handler`) in error messages."""
    role = f"{where} {path!r}"
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise HandlerError(f"{role} must look like 'package.module:function'")
    target: Any = import_user_module(module_name, role)
    owner = module_name
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            hint = did_you_mean(part, public_callables(target))
            raise HandlerError(f"{role}: {owner} has no function {part!r}{hint}") from None
        owner = f"{owner}.{part}"
    if not callable(target):
        raise HandlerError(f"{role}: {owner} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def bind(function: Handler, name: str) -> BoundHandler:
    try:
        # Parameters with defaults are the handler's own business: only required ones count.
        parameters = [p for p in inspect.signature(function).parameters.values()
                      if (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
                      or p.kind is p.VAR_POSITIONAL]
    except (TypeError, ValueError):  # builtins without a signature: assume event only
        parameters = []
    wants_context = len(parameters) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if inspect.iscoroutinefunction(function):
        function = run_coroutines(function)
    return BoundHandler(function=function, wants_context=wants_context, name=name)


def run_coroutines(function: Callable[..., Coroutine[Any, Any, Any]]) -> Handler:
    """An `async def` handler, run to completion on an event loop owned by the calling worker
    thread (one loop per thread, reused), so it may await I/O but never overlaps its key."""
    local = threading.local()

    def run(*arguments: Any) -> Any:
        loop: asyncio.AbstractEventLoop | None = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(function(*arguments))

    return run


class HandlerRegistry:
    """Handlers registered in Python; they take precedence over the topology's import paths at
    the same level (per event type, then per group)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str | None], Handler] = {}

    def register(self, group: str, function: Handler, event: str | None = None) -> None:
        self._handlers[(group, event)] = function

    def update(self, other: HandlerRegistry) -> int:
        """Adopt `other`'s registrations (they replace this registry's at the same place); how many."""
        self._handlers.update(other._handlers)
        return len(other._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def handler(self, group: str, event: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: `@registry.handler("analytics", "block.new")` (event None: group default)."""

        def decorate(function: Handler) -> Handler:
            self.register(group, function, event)
            return function

        return decorate

    def resolve(self, group: ConsumerGroup) -> dict[str, BoundHandler]:
        """The handler of each subscribed event type of `group`; HandlerError if one is missing."""
        resolved: dict[str, BoundHandler] = {}
        missing: list[str] = []
        for subscription in group.subscriptions:
            function: Handler | None = self._handlers.get((group.name, subscription.event))
            name = getattr(function, "__qualname__", repr(function))
            if function is None and subscription.handler:
                function = import_handler(subscription.handler,
                                          f"consumer_groups.{group.name}.subscribes[{subscription.event}].handler")
                name = subscription.handler
            if function is None:
                function = self._handlers.get((group.name, None))
                name = getattr(function, "__qualname__", repr(function))
            if function is None and group.handler:
                function, name = import_handler(group.handler, f"consumer_groups.{group.name}.handler"), group.handler
            if function is None:
                missing.append(subscription.event)
                continue
            resolved[subscription.event] = bind(function, name)
        if missing:
            raise HandlerError(
                f"consumer group {group.name!r} has no handler for {', '.join(missing)}: set "
                f"`consumer_groups.{group.name}.handler: module:function` in topology.yaml (or `handler:` on the "
                "subscription), or register one in Python")
        return resolved
