"""Handlers that publish (`context.publish`): derived events on every transport, in process.

Group `gamma` consumes `token.moved` and publishes one `tx.seen` per input. The derived events are
read back from the broker with a tail (raw envelopes, no dedup in between). The exactly-once and
crash cases on Kafka, with real `topo run` processes: test_consume_transform_produce.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from topologies import Bus

from topo.core import headers as H
from topo.runtime.outbox import derived_event_id
from topo.runtime.runner import GroupRunner
from topo.runtime.transport.base import ConsumeOptions, ConsumerTransport, Delivery, DeliveryReport

pytestmark = pytest.mark.timeout(180)

PUBLISHING = {"gamma": {"publishes": ["tx.seen"]}}


def settled(runner: GroupRunner, condition: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: condition() and runner.in_flight == 0


def derive(event: Any, context: Any, on_delivery: Callable[[DeliveryReport], None] | None = None) -> None:
    """gamma's handler: one tx.seen per token.moved, keyed by the token."""
    context.publish({"chain_id": event.chain_id, "sender": event.payload.token, "seq": event.payload.seq},
                    event_type="tx.seen", on_delivery=on_delivery)


def read_derived(count: int, tail: Any) -> list[dict[str, Any]]:
    """`count` tx.seen envelopes from `tail` (raw: every copy the broker holds)."""
    seen: list[dict[str, Any]] = []
    for _ in range(60):
        seen += [json.loads(d.body) for d in tail.poll(500, 0.5)]
        if len(seen) >= count:
            break
    return seen


def open_tail(bus: Bus, runtime: Any) -> Any:
    return runtime.transport.open_tail(bus.topology.event("tx.seen").topics, from_beginning=True)


def test_derived_events_are_confirmed_before_their_input_is_acked(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(groups=PUBLISHING)
    runtime = bus.runtime()
    tail = open_tail(bus, runtime)
    module = runtime.classes.module
    inputs = {str(runtime.publisher().publish(module.TokenMoved(chain_id=(1, 138)[seq % 2], token=f"t{seq % 7}",
                                                                 seq=seq)).event_id): seq for seq in range(40)}
    assert runtime.publisher().flush(30) == 0
    steps: list[tuple[str, str]] = []  # ("confirmed" | "acked", input event id), in the order they happened

    opened = runtime.transport.open_consumer

    def open_consumer(group: Any, options: ConsumeOptions) -> ConsumerTransport:
        consumer = opened(group, options)
        ack = consumer.ack

        def recording_ack(deliveries: Any) -> None:
            deliveries = list(deliveries)
            steps.extend(("acked", json.loads(d.body)["event_id"]) for d in deliveries)
            ack(deliveries)

        consumer.ack = recording_ack  # type: ignore[method-assign]
        return consumer

    runtime.transport.open_consumer = open_consumer

    def handle(event: Any, context: Any) -> None:
        source = str(event.event_id)

        def confirmed(report: DeliveryReport) -> None:
            assert report.error is None, report.error
            steps.append(("confirmed", source))

        derive(event, context, confirmed)

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: sum(step == "acked" for step, _ in steps) >= len(inputs)), timeout=60)
    for source in inputs:
        assert steps.index(("confirmed", source)) < steps.index(("acked", source)), \
            f"input {source} was acked before its derived event was confirmed: {steps}"
    derived = read_derived(len(inputs), tail)
    tail.close()
    assert sorted(UUID(e["event_id"]) for e in derived) == sorted(
        derived_event_id(UUID(source), "gamma", 0) for source in inputs)
    assert {e["metadata"]["producer"] for e in derived} == {"gamma"}
    assert sorted(e["payload"]["seq"] for e in derived) == sorted(inputs.values())


def test_a_redelivered_input_derives_the_same_event_id(make_bus: Callable[..., Bus]) -> None:
    """The same input handled twice (as after a crash before its ack: a new process, a new
    in-memory dedup store) publishes the same derived ids, which downstream dedup drops."""
    bus = make_bus(groups=PUBLISHING)
    producer = bus.runtime()
    tail = open_tail(bus, producer)
    module = producer.classes.module
    sent = [producer.publisher().publish(module.TokenMoved(chain_id=1, token="t1", seq=seq)) for seq in range(3)]
    assert producer.publisher().flush(30) == 0
    for attempt in range(2):
        if attempt:  # the same envelopes again: a redelivery as the next process sees it
            for published in sent:
                producer.publisher().publish(module.TokenMoved(chain_id=1, token="t1", seq=sent.index(published)),
                                             event_id=published.event_id)
            assert producer.publisher().flush(30) == 0
        consumer = bus.runtime()
        consumer.register("gamma", derive)
        runner = consumer.runner("gamma")
        runner.run(until=settled(runner, lambda runner=runner: runner.handled >= len(sent)), timeout=60)
    derived = read_derived(2 * len(sent), tail)
    tail.close()
    ids = [UUID(e["event_id"]) for e in derived]
    expected = [derived_event_id(p.event_id, "gamma", 0) for p in sent]
    assert sorted(ids) == sorted(expected * 2), "each input derived the same id both times"
    downstream: list[str] = []
    reader = bus.runtime()
    reader.register("beta", lambda event: downstream.append(str(event.event_id)))
    beta = reader.runner("beta")
    beta.run(until=settled(beta, lambda: beta.handled >= 2 * len(sent)), timeout=60)
    assert sorted(downstream) == sorted(str(i) for i in expected), "downstream dedup dropped the copies"


@pytest.mark.parametrize("transport_kind", ["memory"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_failed_attempt_publishes_nothing_and_undeclared_events_are_refused(make_bus: Callable[..., Bus],
                                                                              store: str, tmp_path: Path) -> None:
    """With the SQLite store the handlers run in group commit: a failed handler's savepoint rolls back
    and its derived events go with it."""
    dedup = {"store": store, **({"path": str(tmp_path / "gamma.sqlite")} if store == "sqlite" else {})}
    bus = make_bus(groups={"gamma": {**PUBLISHING["gamma"], "dedup": dedup}}, retry_initial="10ms")
    runtime = bus.runtime()
    tail = open_tail(bus, runtime)
    module = runtime.classes.module
    runtime.publisher().publish(module.TokenMoved(chain_id=1, token="flaky", seq=1))
    runtime.publisher().publish(module.TokenMoved(chain_id=1, token="rogue", seq=2))
    attempts: list[int] = []

    def handle(event: Any, context: Any) -> None:
        derive(event, context)
        if event.payload.token == "rogue":  # token.moved is not in gamma's `publishes`
            context.publish(module.TokenMoved(chain_id=1, token="again", seq=3))
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise RuntimeError("the first attempt fails after publishing")

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma")
    reader = runtime.transport.open_dead_letters(bus.topology.group("gamma"))
    letters: list[Delivery] = []

    def finished() -> bool:
        letters[:] = reader.browse(10, 0)
        return bool(letters) and 2 in attempts

    runner.run(until=settled(runner, finished), timeout=60)
    reader.close()
    derived = read_derived(1, tail)
    tail.close()
    assert [e["payload"]["sender"] for e in derived] == ["flaky"], "only the successful attempt's event was sent"
    assert [letter.headers[H.ERROR_CLASS] for letter in letters] == ["topo.runtime.publisher.PublishError"]
    assert "may not publish 'token.moved'" in letters[0].headers[H.ERROR_MESSAGE]
    assert "consumer_groups.gamma.publishes" in letters[0].headers[H.ERROR_MESSAGE]


@pytest.mark.parametrize("transport_kind", ["memory"])
def test_derived_events_continue_the_inputs_trace(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(groups=PUBLISHING)
    runtime = bus.runtime()
    tail = open_tail(bus, runtime)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    module = runtime.classes.module
    runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1), headers={H.TRACEPARENT: traceparent})
    runtime.register("gamma", derive)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: runner.handled >= 1), timeout=60)
    derived = tail.poll(10, 5)
    tail.close()
    assert [d.headers.get(H.TRACEPARENT) for d in derived] == [traceparent]
