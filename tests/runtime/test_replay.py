"""`topo dlq replay --group G` re-delivers to G alone, on the real brokers: two groups subscribe
the same event, one dead-letters it, the replay reaches that one and never the other."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pika
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from topologies import Bus

from tests.support.waiting import wait_until
from topo.cli import main
from topo.core import headers as H

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("needs_processes")]


def topo(bus: Bus, *arguments: str) -> Any:
    result = CliRunner().invoke(main, [*arguments, "--topology", str(bus.topology_file), "--broker", bus.kind],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def kafka_ends(bus: Bus, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of `topics`."""
    consumer = Consumer({"bootstrap.servers": bus.env["KAFKA_BOOTSTRAP_SERVERS"], "group.id": "topo-test-ends"})
    try:
        ends = {}
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                ends[(topic, partition)] = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                          timeout=30)[1]
        return ends
    finally:
        consumer.close()


def rabbit_ready(bus: Bus, queues: tuple[str, ...]) -> int:
    """Messages waiting in `queues` (ready, not yet delivered to a consumer)."""
    connection = pika.BlockingConnection(pika.URLParameters(bus.env["RABBITMQ_URL"]))
    try:
        channel = connection.channel()
        return sum(channel.queue_declare(queue, passive=True).method.message_count for queue in queues)
    finally:
        connection.close()


def test_replay_reaches_only_the_named_group(make_bus: Callable[..., Bus]) -> None:
    # Published as CloudEvents: retries, dead letters, `dlq list`, --event-id and the replay keep that form.
    bus = make_bus(retry_initial="100ms", envelope="cloudevents")
    runtime = bus.runtime()
    module = runtime.classes.module
    first = runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t1", seq=1))
    second = runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t2", seq=2))
    assert runtime.publisher().flush(30) == 0

    # gamma dead-letters both; alpha (also subscribed to token.moved) handles both.
    def fail(event: Any) -> None:
        raise RuntimeError("downstream is down")

    runtime.register("gamma", fail)
    gamma = runtime.runner("gamma")
    gamma.run(until=lambda: gamma.handled >= 8 and gamma.in_flight == 0, timeout=90)
    alpha_seen: list[str] = []
    runtime.register("alpha", lambda event: alpha_seen.append(str(event.event_id)))
    alpha = runtime.runner("alpha")
    alpha.run(until=lambda: len(alpha_seen) >= 2 and alpha.in_flight == 0, timeout=90)
    assert sorted(alpha_seen) == sorted([str(first.event_id), str(second.event_id)])

    alpha_group, gamma_group = bus.topology.group("alpha"), bus.topology.group("gamma")
    alpha_topics = [*{t for s in alpha_group.subscriptions for t in s.topics}, *(r.name for r in
                                                                                 alpha_group.kafka.retry_topics)]
    before = kafka_ends(bus, alpha_topics) if bus.kind == "kafka" else {}

    dry = topo(bus, "dlq", "replay", "--group", "gamma", "--dry-run", "--json")
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and planned["replayed"] == 0
    assert sorted(e["event_id"] for e in planned["events"]) == sorted([str(first.event_id), str(second.event_id)])
    expected_path = gamma_group.kafka.retry_topics[0].name if bus.kind == "kafka" else gamma_group.rabbitmq.exchange
    assert {e["to"] for e in planned["events"]} == {expected_path}

    # Only the second event; the first stays pending.
    only = json.loads(topo(bus, "dlq", "replay", "--group", "gamma", "--event-id", str(second.event_id),
                           "--json").stdout)
    assert [e["event_id"] for e in only["events"]] == [str(second.event_id)] and only["replayed"] == 1
    if bus.kind == "rabbitmq":  # confirmed: had it gone through the topology exchange, alpha's queues would hold it
        assert rabbit_ready(bus, alpha_group.rabbitmq.queues) == 0
    pending = [json.loads(line) for line in topo(bus, "dlq", "list", "--group", "gamma").stdout.splitlines()]
    assert [letter["event"]["event_id"] for letter in pending] == [str(first.event_id)]

    handled: list[Any] = []
    fixed = bus.runtime()
    fixed.register("gamma", handled.append)
    again = fixed.runner("gamma")
    again.run(until=lambda: bool(handled) and again.in_flight == 0, timeout=60)
    assert [str(e.event_id) for e in handled] == [str(second.event_id)], "the replayed event keeps its event_id"

    if bus.kind == "kafka":
        assert kafka_ends(bus, alpha_topics) == before, "no topic alpha reads received the replayed copy"
    else:
        assert rabbit_ready(bus, alpha_group.rabbitmq.queues) == 0
    # And alpha, running again for a while after gamma handled the replay, receives nothing.
    late: list[Any] = []
    other = bus.runtime()
    other.register("alpha", late.append)
    other.runner("alpha").run(timeout=3)
    assert late == []

    rest = topo(bus, "dlq", "replay", "--group", "gamma")
    assert "replayed 1 dead letter(s) of group gamma to group gamma only" in rest.stdout
    assert "replayed 0 dead letter" in topo(bus, "dlq", "replay", "--group", "gamma").stdout


def test_replay_to_all_groups_and_its_headers(make_bus: Callable[..., Bus]) -> None:
    """--all-groups re-publishes to the original topic (every subscribed group); the copy keeps the
    trace context and drops the failure history."""
    bus = make_bus(retry_initial="100ms")
    runtime = bus.runtime()
    module = runtime.classes.module
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1),
                                       headers={"traceparent": parent, "tracestate": "topo=1"})
    assert runtime.publisher().flush(30) == 0

    def fail(event: Any) -> None:
        raise RuntimeError("down")

    runtime.register("gamma", fail)
    gamma = runtime.runner("gamma")
    gamma.run(until=lambda: gamma.handled >= 4 and gamma.in_flight == 0, timeout=90)
    [letter] = [json.loads(line) for line in topo(bus, "dlq", "list", "--group", "gamma").stdout.splitlines()]
    assert letter["headers"]["traceparent"] == parent and letter["headers"]["tracestate"] == "topo=1"

    tail = bus.runtime().transport.open_tail([bus.topology.event_topic("token.moved", 1)])
    try:
        topo(bus, "dlq", "replay", "--group", "gamma", "--all-groups")
        copies: list[Any] = []
        wait_until(lambda: copies.extend(tail.poll(10, 0.5)) or bool(copies), 30, "the replayed copy on the topic")
    finally:
        tail.close()
    [copy] = copies
    assert json.loads(copy.body)["event_id"] == str(sent.event_id)
    assert copy.headers["traceparent"] == parent and copy.headers[H.REPLAYED_FROM]
    assert not {H.ATTEMPT, H.ERROR_CLASS, H.DEAD_LETTER_REASON, H.ORIGINAL_TOPIC} & set(copy.headers)
