"""W3C trace context from publish to handler, through retry copies, dead letters and a replay, with
OpenTelemetry spans (the SDK's in-memory exporter), on every transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span
from topologies import Bus

from topo.cli import main
from topo.core import headers as H
from topo.runtime.handlers import HandlerContext

pytestmark = pytest.mark.timeout(180)


def trace_id_of(traceparent: str | None) -> int:
    assert traceparent is not None, "no traceparent"
    return int(traceparent.split("-")[1], 16)


def test_trace_context_reaches_handlers_retries_dead_letters_and_replays(make_bus: Callable[..., Bus]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = make_bus(retry_initial="100ms")
    runtime = bus.runtime(tracer_provider=provider)
    module = runtime.classes.module
    with provider.get_tracer("a-service").start_as_current_span("request") as request:
        sent = runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1))
    assert runtime.publisher().flush(30) == 0
    trace_id = request.get_span_context().trace_id
    [publish] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert publish.context.trace_id == trace_id and publish.parent is not None
    assert publish.parent.span_id == request.get_span_context().span_id
    assert publish.attributes is not None and publish.attributes["messaging.message.id"] == str(sent.event_id)

    # Attempt 1 reads the event; attempts 2-4 read the retry copies (retry topics / wait queues).
    attempts: list[tuple[int, int, int]] = []

    def fail(event: Any, context: HandlerContext) -> None:
        attempts.append((context.attempt, trace_id_of(context.traceparent), get_current_span().get_span_context()
                         .trace_id))
        raise RuntimeError("downstream is down")

    runtime.register("gamma", fail)
    gamma = runtime.runner("gamma")
    gamma.run(until=lambda: gamma.handled >= 4 and gamma.in_flight == 0, timeout=90)
    assert [a for a, _, _ in attempts] == [1, 2, 3, 4]
    assert {(carried, current) for _, carried, current in attempts} == {(trace_id, trace_id)}, \
        "every retry copy carries the publisher's trace and the handler's span belongs to it"
    handled = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(handled) == 4 and {s.context.trace_id for s in handled} == {trace_id}
    assert {s.parent.span_id for s in handled if s.parent is not None} == {publish.context.span_id}
    assert all(s.attributes is not None and s.attributes["messaging.consumer.group.name"] == "gamma"
               for s in handled)

    if bus.kind == "memory":
        [letter] = bus.shared.dead_letters(bus.topology.group("gamma"))
        assert trace_id_of(letter.headers[H.TRACEPARENT]) == trace_id
        return
    arguments = ["--topology", str(bus.topology_file), "--broker", bus.kind]
    listed = CliRunner().invoke(main, ["dlq", "list", "--group", "gamma", *arguments], catch_exceptions=False)
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert trace_id_of(letter["headers"][H.TRACEPARENT]) == trace_id, "the dead letter carries the trace"
    replayed = CliRunner().invoke(main, ["dlq", "replay", "--group", "gamma", *arguments], catch_exceptions=False)
    assert replayed.exit_code == 0, replayed.output

    exporter.clear()
    fixed = bus.runtime(tracer_provider=provider)
    seen: list[tuple[str, int]] = []
    fixed.register("gamma", lambda event, context: seen.append((str(event.event_id),
                                                                trace_id_of(context.traceparent))))
    again = fixed.runner("gamma")
    again.run(until=lambda: bool(seen) and again.in_flight == 0, timeout=60)
    assert seen == [(str(sent.event_id), trace_id)], "the replayed event keeps its event_id and trace"
    [process] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.context.trace_id == trace_id


def test_tracing_is_off_until_a_tracer_provider_is_configured() -> None:
    """With only the API (its default proxy provider) spans would be no-ops: the runtime makes none and
    its publish and consume paths stay untraced; a provider given (or set globally) turns spans on."""
    from opentelemetry import trace

    from topo.runtime.tracing import Tracing

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no test sets a global provider"
    assert Tracing.detect("kafka") is None
    traced = Tracing.detect("rabbitmq", TracerProvider())
    assert traced is not None and traced.broker == "rabbitmq"
