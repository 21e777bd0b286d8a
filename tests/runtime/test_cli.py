"""`topo publish`, `topo tail`, `topo dlq list|replay` against the real brokers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from topologies import Bus

from topo.cli import main
from topo.core import headers as H

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("needs_processes")]


def topo(bus: Bus, *arguments: str) -> Any:
    return CliRunner().invoke(main, [*arguments, "--topology", str(bus.topology_file), "--broker", bus.kind],
                              catch_exceptions=False)


def test_publish_validates_and_tail_shows_the_event(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    tail = subprocess.Popen([sys.executable, "-m", "topo", "tail", "tx.seen", "--chain", "138", "--limit", "1",
                             "--timeout", "60", "--topology", str(bus.topology_file), "--broker", bus.kind],
                            env=bus.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr is not None
        ready = tail.stderr.readline()
        assert "tailing 1 topic" in ready, ready
        sent = topo(bus, "publish", "tx.seen", "--chain", "138", "--payload", '{"sender": "alice", "seq": 5}')
        assert sent.exit_code == 0, sent.output
        receipt = json.loads(sent.output)
        assert receipt["topic"] == bus.topology.event_topic("tx.seen", 138).topic and receipt["key"] == "alice"
        output, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    line = json.loads(output.splitlines()[0])
    assert line["event"]["event_id"] == receipt["event_id"]
    assert line["event"]["payload"] == {"chain_id": 138, "sender": "alice", "seq": 5, "note": None}

    report = topo(bus, "publish", "tx.seen", "--chain", "1", "--payload", '{"sender": "bob", "seq": 1}', "--json")
    assert report.exit_code == 0, report.output
    delivered = json.loads(report.stdout)
    declared = bus.topology.event_topic("tx.seen", 1)
    assert (delivered["topic"], delivered["routing_key"]) == (declared.topic, declared.routing_key)
    assert delivered["destination"] == (declared.topic if bus.kind == "kafka" else declared.routing_key)
    assert delivered["event_id"] != receipt["event_id"] and delivered["key"] == "bob"
    if bus.kind == "kafka":
        assert isinstance(delivered["partition"], int) and delivered["offset"] >= 0

    invalid = topo(bus, "publish", "tx.seen", "--chain", "138", "--payload", '{"sender": "alice", "seq": -1}')
    assert invalid.exit_code == 1 and invalid.stderr == "error: payload.seq: must be >= 0 (got -1)\n"
    unknown_chain = topo(bus, "publish", "tx.seen", "--chain", "5", "--payload", '{"sender": "a", "seq": 1}')
    assert unknown_chain.exit_code != 0 and "chain 5 is not declared" in unknown_chain.output
    unknown_event = topo(bus, "publish", "nope.nope", "--payload", "{}")
    assert unknown_event.exit_code != 0 and "unknown event type" in unknown_event.output


def test_dlq_list_and_replay(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(retry_initial="100ms")
    runtime = bus.runtime()
    module = runtime.classes.module
    published = runtime.publisher().publish(module.TokenMoved(chain_id=1, token="bad", seq=1))
    assert runtime.publisher().flush(30) == 0

    def fail(event: Any) -> None:
        raise RuntimeError("downstream is down")

    runtime.register("gamma", fail)
    runner = runtime.runner("gamma")
    runner.run(until=lambda: runner.handled >= 4 and runner.in_flight == 0, timeout=60)

    listed = topo(bus, "dlq", "list", "--group", "gamma")
    assert listed.exit_code == 0, listed.output
    [letter] = [json.loads(line) for line in listed.output.splitlines()]
    assert letter["event"]["event_id"] == str(published.event_id)
    assert letter["headers"][H.DEAD_LETTER_REASON] == H.REASON_MAX_RETRIES
    assert letter["headers"][H.ERROR_MESSAGE] == "downstream is down"

    replayed = topo(bus, "dlq", "replay", "--group", "gamma")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 dead letter" in replayed.output
    again = topo(bus, "dlq", "replay", "--group", "gamma")
    assert "replayed 0 dead letter" in again.output, "a replay is recorded: it is not replayed twice"

    handled: list[Any] = []
    fixed = bus.runtime()
    fixed.register("gamma", handled.append)
    second = fixed.runner("gamma")
    second.run(until=lambda: bool(handled) and second.in_flight == 0, timeout=60)
    assert [str(e.event_id) for e in handled] == [str(published.event_id)]
