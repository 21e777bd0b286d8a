"""Tolerant readers, strict writers: an event carrying a payload field its consumer's classes do
not declare (a newer producer's) is handled; with `reader: strict` it is poison; publishing an
unknown field is refused. On every transport (the memory one, Kafka and RabbitMQ)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from topologies import Bus

from topo.core import headers as H
from topo.runtime.publisher import PublishError

pytestmark = pytest.mark.timeout(180)


def newer_producers_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """The envelope a producer built from a newer topology writes: its payload has a field more."""
    return json.dumps({
        "event_type": event_type, "event_id": str(uuid.uuid4()), "timestamp": "2026-01-01T00:00:00Z",
        "chain_id": payload["chain_id"], "payload": payload, "metadata": {"producer": "indexer", "version": "1.1"},
    }).encode()


def test_an_unknown_field_is_handled_by_a_tolerant_reader_and_poison_to_a_strict_one(
        make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(events={"tx.seen": {"reader": "strict"}})  # token.moved keeps the default: tolerant
    runtime = bus.runtime()
    raw = runtime.transport.open_publisher("indexer")
    raw.publish(bus.topology.event_topic("token.moved", 1), "usdc",
                newer_producers_event("token.moved", {"chain_id": 1, "token": "usdc", "seq": 1, "colour": "red"}))
    raw.publish(bus.topology.event_topic("tx.seen", 1), "alice",
                newer_producers_event("tx.seen", {"chain_id": 1, "sender": "alice", "seq": 2, "colour": "red"}))
    assert raw.flush(30) == 0
    raw.close()
    handled: list[Any] = []
    runtime.register("alpha", handled.append)
    runner = runtime.runner("alpha")
    runner.run(until=lambda: runner.handled >= 2 and runner.in_flight == 0, timeout=60)
    reader = runtime.transport.open_dead_letters(bus.topology.group("alpha"))
    letters = reader.browse(10, 10)
    reader.close()

    assert [(e.event_type, e.payload.token, e.payload.seq) for e in handled] == [("token.moved", "usdc", 1)]
    assert handled[0].payload.model_extra == {"colour": "red"}  # kept apart from the typed fields
    assert [json.loads(letter.body)["payload"]["sender"] for letter in letters] == ["alice"]
    assert letters[0].headers[H.DEAD_LETTER_REASON] == H.REASON_POISON
    assert letters[0].headers[H.ERROR_CLASS].endswith("ValidationError")


@pytest.mark.parametrize("transport_kind", ["memory"])  # refused before any transport is involved
def test_publishing_an_unknown_field_is_refused(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    module = runtime.classes.module
    with pytest.raises(PublishError) as mapping:
        runtime.publisher().publish({"chain_id": 1, "token": "usdc", "seq": 1, "colour": "red"},
                                    event_type="token.moved")
    assert [str(p) for p in mapping.value.problems] == ['payload.colour: unknown field (got "red")']
    # An instance built with an unknown field (or a tolerant reader's, passed on) is refused as well.
    with pytest.raises(PublishError, match=r"payload\.seqq: unknown field; did you mean 'seq'"):
        runtime.publisher().publish(module.TokenMoved(chain_id=1, token="usdc", seq=1, seqq=1))
