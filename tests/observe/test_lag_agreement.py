"""`topo lag` agrees with Kafka's consumer-group tool and with RabbitMQ's queue counts."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from dev import brokers
from topo.core.model import Topology
from topo.runtime.app import Runtime
from topo.runtime.observe.lag import KafkaLagReader

from .support import EVENT, GROUP, compile_topology, document, environment, topo, wait_for

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def publish(generated: Path, broker: str, count: int) -> None:
    runtime = Runtime.from_generated(generated, broker=broker)
    try:
        publisher = runtime.publisher()
        for seq in range(count):
            publisher.publish({"chain_id": 1, "item": f"item-{seq}", "seq": seq}, event_type=EVENT)
        assert publisher.flush(30) == 0
    finally:
        runtime.close()


def apply(generated: Path, env: dict[str, str]) -> None:
    result = topo("apply", "-t", str(generated / "topology.json"), "--yes", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def topo_lag(generated: Path, env: dict[str, str]) -> dict[str, Any]:
    result = topo("lag", "-t", str(generated / "topology.json"), "--group", GROUP, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def kafka_tool(bootstrap: str, group_id: str) -> list[dict[str, str]]:
    """Rows of `kafka-consumer-groups.sh --describe` (the same class, from the dev broker's jars)."""
    paths = brokers.KafkaPaths.current()
    argv = ["java", "-cp", str(paths.lib / "*"),
            f"-Dlog4j2.configurationFile={brokers.DEV_DIR / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={paths.logs}",  # the config's file appenders write there
            CONSUMER_GROUP_COMMAND, "--bootstrap-server", bootstrap, "--describe", "--group", group_id]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next(i for i, cols in enumerate(lines) if cols[:2] == ["GROUP", "TOPIC"])
    names = lines[header]
    return [dict(zip(names, cols, strict=False)) for cols in lines[header + 1:] if cols[0] == group_id]


@pytest.fixture
def kafka_generated(tmp_path: Path, unique_name: str, kafka_bootstrap: str, kafka_admin: Any,
                    monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    generated = tmp_path / "generated"
    topology = compile_topology(document(unique_name, "kafka"), generated)
    env = environment(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    apply(generated, env)
    yield topology, generated, env
    group = topology.group(GROUP)
    topics = [t for s in group.subscriptions for t in s.topics] + [group.kafka.dlq_topic]
    for future in kafka_admin.delete_topics(topics, operation_timeout=30).values():
        future.result(timeout=60)
    for future in kafka_admin.delete_consumer_groups([group.kafka.group_id]).values():
        future.result(timeout=60)


def test_topo_lag_agrees_with_kafka_consumer_groups_tool(kafka_generated: tuple[Topology, Path, dict[str, str]],
                                                         kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topology, generated, env = kafka_generated
    group = topology.group(GROUP)
    topic = group.subscriptions[0].topics[0]
    started = time.time()
    publish(generated, "kafka", 60)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group.kafka.group_id,
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
        assert sum(ends.values()) == 60
        # Partition 0 half consumed, partition 1 fully, partition 2 never committed.
        committed = {0: ends[0] // 2, 1: ends[1]}
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()], asynchronous=False)
    finally:
        consumer.close()

    ours = topo_lag(generated, env)["groups"][0]
    theirs = kafka_tool(kafka_bootstrap, group.kafka.group_id)
    by_partition = {(s["topic"], s["partition"]): s for s in ours["streams"]}
    assert len(by_partition) == 3
    compared = 0
    for row in theirs:
        stream = by_partition[(row["TOPIC"], int(row["PARTITION"]))]
        assert stream["end"] == int(row["LOG-END-OFFSET"])
        if row["CURRENT-OFFSET"] == "-":
            assert stream["position"] is None
            continue
        assert stream["position"] == int(row["CURRENT-OFFSET"])
        assert stream["lag"] == int(row["LAG"])
        compared += 1
    assert compared == 2, theirs
    # Where Kafka's tool prints "-", topo counts from the log start (a new group starts at earliest).
    assert by_partition[(topic, 2)]["lag"] == ends[2]
    assert ours["sum_lag"] == sum(ends.values()) - committed[0] - committed[1]
    # Lag in seconds: the age of the record at the committed offset, read from the broker.
    head = by_partition[(topic, 0)]
    if head["lag"]:
        assert 0 <= head["lag_seconds"] <= time.time() - started + 1
    assert by_partition[(topic, 1)]["lag_seconds"] == 0
    # The monitor's reader reads heads again and again with one consumer. A head not read within
    # its HEAD_READ_TIMEOUT has no age, so an age on each read shows every read finished in time.
    reader = KafkaLagReader(topology)
    try:
        for _ in range(2):
            again = {(s.topic, s.partition): s for s in reader.read([group]).groups[0].streams}
            assert again[(topic, 0)].lag_seconds is not None and again[(topic, 2)].lag_seconds is not None
    finally:
        reader.close()


def management_url(api: Any) -> str:
    parsed = urllib.parse.urlsplit(str(api.url))
    credentials = f"{urllib.parse.quote(api.user, safe='')}:{urllib.parse.quote(api.password, safe='')}"
    return urllib.parse.urlunsplit((parsed.scheme, f"{credentials}@{parsed.netloc}", parsed.path, "", ""))


def test_topo_lag_agrees_with_rabbitmq_queue_counts(tmp_path: Path, unique_name: str, rabbit_vhost: Any,
                                                    rabbitmq_management: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pika

    api = rabbitmq_management
    env = environment(RABBITMQ_URL=rabbit_vhost.url, RABBITMQ_MANAGEMENT_URL=management_url(api))
    monkeypatch.setenv("RABBITMQ_URL", rabbit_vhost.url)
    generated = tmp_path / "generated"
    topology = compile_topology(document(unique_name, "rabbitmq"), generated)
    apply(generated, env)
    publish(generated, "rabbitmq", 40)
    group = topology.group(GROUP)
    queue = group.rabbitmq.queues[0]

    # A consumer holding three messages unacknowledged on the first queue.
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_vhost.url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=3)
        channel.basic_consume(queue, lambda *_: None, auto_ack=False)
        connection.process_data_events(time_limit=1)
        vhost = api.quote(rabbit_vhost.name)

        def settled() -> dict[str, dict[str, Any]] | None:
            queues = {q["name"]: q for q in api.get(f"/api/queues/{vhost}")}
            first = queues.get(queue, {})
            total = sum(int(queues.get(q, {}).get("messages") or 0) for q in group.rabbitmq.queues)
            ok = first.get("messages_unacknowledged") == 3 and first.get("consumers") == 1 and total == 40
            return queues if ok else None

        queues = wait_for(settled, 30, "management statistics to show 40 messages, 3 unacknowledged")
        ours = topo_lag(generated, env)["groups"][0]
    finally:
        connection.close()

    streams = {s["topic"]: s for s in ours["streams"] if s["kind"] == "events"}
    assert sorted(streams) == sorted(group.rabbitmq.queues)
    for name, stream in streams.items():
        info = queues[name]
        assert stream["ready"] == info["messages_ready"]
        assert stream["unacked"] == info["messages_unacknowledged"]
        assert stream["consumers"] == info["consumers"]
        assert stream["lag"] == info["messages"]
    assert ours["sum_lag"] == 40
    assert ours["members"] == 1
    assert ours["dead_letters"] == int(queues[group.rabbitmq.dlq_queue]["messages"] or 0) == 0
    assert not ours["missing"]
    assert re.fullmatch(r"t-[0-9a-f]{8}", ours["consumer_id"])  # the vhost of RABBITMQ_URL
