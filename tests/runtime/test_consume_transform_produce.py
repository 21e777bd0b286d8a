"""Consume-transform-produce on Kafka with real `topo run` processes (exactly-once group).

Group `gamma` consumes N `token.moved` events and publishes one `tx.seen` per input from its
handler (`rt_handlers:derive`), in the Kafka transaction that commits the input's offset. Its
processes are `kill -9`'d at random points, or paused (SIGSTOP) until their partitions moved to
another member and then resumed (a zombie). Afterwards Kafka's own Java console consumer, with
`--isolation-level read_committed` (a client that is not librdkafka), must see exactly N derived
events: each input's derived id once, nothing else.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from topologies import Bus

from dev import brokers
from tests.support.waiting import wait_until
from topo.runtime.outbox import derived_event_id

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("transport_kind", ["kafka"])]

EVENTS = 3000
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"


def ctp_bus(make_bus: Callable[..., Bus]) -> Bus:
    return make_bus(groups={"gamma": {"handler": "rt_handlers:derive", "delivery": "exactly_once",
                                      "publishes": ["tx.seen"]}})


def publish_inputs(bus: Bus) -> set[UUID]:
    runtime = bus.runtime()
    module = runtime.classes.module
    ids = {runtime.publisher().publish(module.TokenMoved(chain_id=(1, 138)[i % 2], token=f"t{i % 40}",
                                                         seq=i)).event_id for i in range(EVENTS)}
    assert runtime.publisher().flush(60) == 0
    return ids


def start(bus: Bus, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "topo", "run", "--group", "gamma", "--topology", str(bus.topology_file),
               "--broker", "kafka", "--shutdown-timeout", "5", "--log-level", "warning"]
    with log.open("ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(command, env={**bus.env, "RT_HANDLER_SLEEP": "0.02"}, stdout=output,
                                stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Progress:
    """Reads the derived events as they commit (librdkafka, read_committed) and the group's
    committed input offsets, to pace the test; the verdict is the Java reader's."""

    def __init__(self, bus: Bus) -> None:
        self.bootstrap = bus.env["KAFKA_BOOTSTRAP_SERVERS"]
        self.group = bus.topology.group("gamma")
        self.inputs = [topic for s in self.group.subscriptions for topic in s.topics]
        self.outputs = [t.topic for t in bus.topology.event("tx.seen").topics]
        partitions = bus.topology.kafka.partitions
        self.reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.group.kafka.group_id}-check",
                                "enable.auto.commit": False, "isolation.level": "read_committed"})
        self.reader.assign([TopicPartition(t, p, 0) for t in self.outputs for p in range(partitions)])
        self.offsets = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group.kafka.group_id,
                                 "enable.auto.commit": False, "isolation.level": "read_committed"})
        self.partitions = [TopicPartition(t, p) for t in self.inputs for p in range(partitions)]
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.derived: list[str] = []

    def count(self) -> int:
        for message in self.reader.consume(1000, 0.2):
            if message.error() is None:
                self.derived.append(json.loads(message.value())["event_id"])
        return len(self.derived)

    def inputs_committed(self) -> bool:
        committed = self.offsets.committed(self.partitions, timeout=20)
        return all(c.offset == self.offsets.get_watermark_offsets(c, timeout=20)[1] for c in committed)

    def members(self) -> list[int]:
        """Partitions assigned to each member of gamma's Kafka group."""
        description = self.admin.describe_consumer_groups([self.group.kafka.group_id])[self.group.kafka.group_id]
        return sorted(len(m.assignment.topic_partitions) for m in description.result(timeout=20).members)

    def close(self) -> None:
        self.reader.close()
        self.offsets.close()


def finish(progress: Progress) -> None:
    wait_until(lambda: progress.inputs_committed() and progress.count() >= EVENTS, 180,
               "every input's offset committed and its derived event visible", interval=1.0)


def java_read_committed(bus: Bus, tmp_path: Path) -> list[str]:
    """event_id of the first EVENTS derived events Kafka's ConsoleConsumer reads with read_committed
    (it stops there: anything beyond would be a copy, which `Progress` reads and counts)."""
    paths = brokers.KafkaPaths.current()
    outputs = "|".join(t.topic for t in bus.topology.event("tx.seen").topics)
    argv = ["java", "-cp", str(paths.lib / "*"),
            f"-Dlog4j2.configurationFile={brokers.DEV_DIR / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={tmp_path}", CONSOLE_CONSUMER,
            "--bootstrap-server", bus.env["KAFKA_BOOTSTRAP_SERVERS"], "--include", outputs, "--from-beginning",
            "--isolation-level", "read_committed", "--max-messages", str(EVENTS), "--timeout-ms", "60000"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert events, f"the console consumer read nothing: {result.stderr[-2000:]}"
    return [event["event_id"] for event in events]


def assert_exactly_once(ids: list[str], inputs: set[UUID], reader: str) -> None:
    expected = {str(derived_event_id(source, "gamma", 0)) for source in inputs}
    twice = len(ids) - len(set(ids))
    assert twice == 0, f"{reader}: {twice} derived events seen twice"
    assert set(ids) == expected, (f"{reader}: {len(expected - set(ids))} derived events missing, "
                                  f"{len(set(ids) - expected)} unexpected")


def test_kill_9_three_times_derives_each_event_exactly_once(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = ctp_bus(make_bus)
    inputs = publish_inputs(bus)
    progress = Progress(bus)
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    processes = [start(bus, tmp_path / "p0.log"), start(bus, tmp_path / "p1.log")]
    try:
        for kill in range(3):
            target = progress.count() + chance.randint(50, 400)  # a random point of the stream
            wait_until(lambda target=target: progress.count() >= target, 120,
                       f"{target} derived events before kill {kill + 1} (seed {seed})", interval=0.05)
            victim = chance.randrange(len(processes))
            processes[victim].kill()  # SIGKILL: no drain, an open transaction left behind
            processes[victim].wait(10)
            processes[victim] = start(bus, tmp_path / f"p{victim}.log")
        assert progress.count() < EVENTS, "the stream ended before the third kill"
        finish(progress)
    finally:
        for process in processes:
            stop(process)
        progress.close()
    assert_exactly_once(progress.derived, inputs, "librdkafka read_committed")
    assert_exactly_once(java_read_committed(bus, tmp_path), inputs, "Java ConsoleConsumer read_committed")


def test_a_resumed_zombie_is_fenced_and_adds_nothing(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = ctp_bus(make_bus)
    inputs = publish_inputs(bus)
    progress = Progress(bus)
    zombie_log = tmp_path / "zombie.log"
    zombie = start(bus, zombie_log)
    survivor = start(bus, tmp_path / "survivor.log")
    try:
        wait_until(lambda: len([n for n in progress.members() if n]) == 2, 120,
                   lambda: f"both members assigned partitions (assigned: {progress.members()})")
        everything = sum(progress.members())
        wait_until(lambda: progress.count() >= 200, 120, "derived events from both members")
        zombie.send_signal(signal.SIGSTOP)  # mid-stream: handlers and a transaction in flight
        wait_until(lambda: progress.members() == [everything], 120,
                   "the survivor owning every partition (the paused member's session expired)", interval=1.0)
        zombie.send_signal(signal.SIGCONT)
        code = zombie.wait(120)
        finish(progress)
    finally:
        stop(zombie)
        stop(survivor)
        progress.close()
    output = zombie_log.read_text()
    assert code != 0, f"the zombie went on after it resumed: {output[-2000:]}"
    assert "fenced" in output, output[-2000:]
    assert_exactly_once(progress.derived, inputs, "librdkafka read_committed")
    assert_exactly_once(java_read_committed(bus, tmp_path), inputs, "Java ConsoleConsumer read_committed")

