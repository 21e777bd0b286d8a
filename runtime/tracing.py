"""W3C trace context and OpenTelemetry spans, when OpenTelemetry is there.

Without OpenTelemetry the runtime still carries `traceparent` / `tracestate` (the W3C trace
context headers): `Publisher.publish(headers=...)` sends them, retry copies, dead letters and
replays keep every header, and `HandlerContext.traceparent` hands them to a handler.

With `opentelemetry-api` importable (the `tracing` extra) and a tracer provider configured (given
to `Runtime(tracer_provider=...)`, or set globally, e.g. by `opentelemetry-instrument topo run`),
publishing opens a PRODUCER span `publish <topic>` whose context is injected into the message
headers, and handling opens a CONSUMER span `process <topic>` whose parent is the context the
message carries. With only the API and no provider, spans would be no-ops: nothing is done then, so
the publish and consume paths stay as fast as without OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from topo.core import headers as H
from topo.runtime.handlers import BoundHandler, HandlerContext

TRACER_NAME = "topo.runtime"


class Tracing:
    """Spans of one runtime (see the module docstring)."""

    def __init__(self, tracer: Any, broker: str) -> None:
        from opentelemetry import propagate, trace

        self.tracer = tracer
        self.broker = broker
        self._propagate = propagate
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER

    @classmethod
    def detect(cls, broker: str, tracer_provider: Any = None) -> Tracing | None:
        """Tracing with `tracer_provider`, or with the global provider once one is configured;
        None without OpenTelemetry or without a provider."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        provider = tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
        return cls(provider.get_tracer(TRACER_NAME), broker)

    def publish_headers(self, destination: str, event_type: str, event_id: str,
                        headers: Mapping[str, str] | None, send: Callable[[dict[str, str]], None]) -> None:
        """Call `send` with `headers` plus the trace context of a publish span around it (child of a
        `traceparent` given in `headers`, else of the current span)."""
        carrier = dict(headers or {})
        parent = self._propagate.extract(carrier) if H.TRACEPARENT in carrier else None
        with self.tracer.start_as_current_span(
                f"publish {destination}", context=parent, kind=self._producer,
                attributes=self._attributes("publish", destination, event_type, event_id)):
            self._propagate.inject(carrier)
            send(carrier)

    def wrap(self, handler: BoundHandler, group: str) -> Callable[[Any, HandlerContext], Any]:
        """`handler` as a two-argument call inside a `process <topic>` span whose parent is the
        trace context of the message (`HandlerContext.traceparent` / `tracestate`)."""
        function, wants_context = handler.function, handler.wants_context
        tracer, extract, kind = self.tracer, self._propagate.extract, self._consumer

        def traced(event: Any, context: HandlerContext) -> Any:
            carrier = {}
            if context.traceparent:
                carrier[H.TRACEPARENT] = context.traceparent
                if context.tracestate:
                    carrier[H.TRACESTATE] = context.tracestate
            attributes = self._attributes("process", context.topic, context.event_type, str(event.event_id))
            attributes["messaging.consumer.group.name"] = group
            attributes["topo.attempt"] = context.attempt
            with tracer.start_as_current_span(f"process {context.topic}", context=extract(carrier) if carrier
                                              else None, kind=kind, attributes=attributes):
                return function(event, context) if wants_context else function(event)

        return traced

    def _attributes(self, operation: str, destination: str, event_type: str, event_id: str) -> dict[str, Any]:
        return {"messaging.system": self.broker, "messaging.operation.name": operation,
                "messaging.destination.name": destination, "messaging.message.id": event_id,
                "topo.event_type": event_type}
