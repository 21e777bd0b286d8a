"""Broker trouble is one line: every command against an unreachable broker, refused credentials or
a topology not applied yet says so in one line naming the address (never the password) or the
missing object, the setting and the fix, and exits non-zero within 15 s; `topo run` against an
unreachable broker stays up and not ready, and exits cleanly on SIGTERM; no raw librdkafka line.

The command scenarios run once per module, concurrently (real brokers, `topo` subprocesses), and
each is asserted by its own test. The connection-state reporting of a running consumer is
exercised through a TCP relay to RabbitMQ that the test closes and reopens (the shared brokers
are never stopped).
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import generated, small_doc, write_yaml
from tests.runtime.topologies import compile_topology, provision_rabbitmq
from tests.support.relay import Relay
from tests.support.waiting import wait_until
from topo.core.client_logs import KafkaClientLog, RepeatFilter, route_client_logs
from topo.runtime.app import Runtime
from topo.runtime.connection_state import BrokerLink
from topo.runtime.observe.health import RuntimeState
from topo.runtime.transport.base import BrokerUnreachable

TOPO = str(Path(sys.executable).with_name("topo"))
BOUND = 15.0  # seconds every command gets to report broker trouble
PASSWORD = "pw-never-printed"
CLOSED = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "RABBITMQ_URL": f"amqp://guest:{PASSWORD}@127.0.0.1:1/%2F",
          "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:1"}
SETTING = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "rabbitmq": "RABBITMQ_URL"}
PAYLOAD = '{"block_number": 1}'
COMMANDS: dict[str, list[str]] = {
    "publish": ["publish", "block.new", "--chain", "1", "--payload", PAYLOAD],
    "tail": ["tail", "block.new", "--timeout", "1"],
    "dlq list": ["dlq", "list", "--group", "indexer", "--timeout", "1"],
    "lag": ["lag"],
    "apply": ["apply", "--yes"],
    "run": ["run", "--group", "indexer"],
}


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    stderr: str
    seconds: float
    notes: tuple[str, ...] = ()  # what a `topo run` scenario observed besides its exit

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def project(folder: Path, broker: str) -> Path:
    """A topology of a unique name on `broker`, generated into `folder`, with a handler module beside it."""
    doc = small_doc(f"bt{uuid.uuid4().hex[:8]}", ("indexer",))
    doc["broker"]["kind"] = broker
    doc["consumer_groups"]["indexer"]["handler"] = "trouble_handlers:ignore"
    source = write_yaml(folder / "topology.yaml", doc)
    (folder / "trouble_handlers.py").write_text("def ignore(event):\n    return None\n", encoding="utf-8")
    generated(source, folder / "generated")
    return folder


def topo(folder: Path, env: dict[str, str], arguments: list[str]) -> Outcome:
    started = time.monotonic()
    try:
        done = subprocess.run([TOPO, *arguments, "-t", "topology.yaml"], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=BOUND)
    except subprocess.TimeoutExpired as expired:
        text = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        return Outcome(None, text, time.monotonic() - started)
    return Outcome(done.returncode, done.stderr, time.monotonic() - started)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def run_unreachable(folder: Path, env: dict[str, str]) -> Outcome:
    """`topo run` against a closed port: up, not ready, reported once, SIGTERM exits it."""
    started = time.monotonic()
    process = subprocess.Popen([TOPO, "run", "-t", "topology.yaml", "--group", "indexer", "--metrics-port", "0"],
                               cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen: list[str] = []
    try:
        def reported() -> bool:  # reads stderr until the process has said what is wrong
            if select.select([process.stderr], [], [], 0.5)[0]:
                seen.append(process.stderr.readline())
            return any("retrying" in line for line in seen)

        wait_until(reported, BOUND, lambda: f"`topo run` to report the unreachable broker; said {seen}", interval=0)
        port = int(next(m.group(1) for line in seen if (m := re.search(r"metrics on :(\d+)", line))))
        status = readyz(port)
        alive = process.poll() is None
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=BOUND)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Outcome(process.returncode, "".join(seen) + rest, time.monotonic() - started,
                   (f"readyz {status}", f"alive {alive}"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, rabbitmq_url: str
             ) -> dict[tuple[str, str, str], Outcome]:
    """(broker, situation, command) -> what `topo COMMAND` did; every scenario runs at once."""
    live = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "RABBITMQ_URL": rabbitmq_url}
    closed = {**os.environ, **CLOSED}
    parts = urllib.parse.urlsplit(rabbitmq_url)
    refused = {**live, "RABBITMQ_URL": parts._replace(netloc=f"guest:{PASSWORD}@{parts.hostname}:{parts.port}")
               .geturl()}
    jobs: dict[tuple[str, str, str], Callable[[], Outcome]] = {}
    for broker in ("kafka", "rabbitmq"):
        folder = project(tmp_path_factory.mktemp(broker), broker)
        for command, arguments in COMMANDS.items():
            if command == "run":
                jobs[(broker, "closed", command)] = lambda f=folder: run_unreachable(f, closed)
            else:
                jobs[(broker, "closed", command)] = lambda f=folder, a=arguments: topo(f, closed, a)
            if command != "apply":
                jobs[(broker, "unapplied", command)] = lambda f=folder, a=arguments: topo(f, live, a)
        if broker == "rabbitmq":
            for command in ("publish", "tail"):
                jobs[(broker, "refused", command)] = lambda f=folder, a=COMMANDS[command]: topo(f, refused, a)
    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


SCENARIOS = [(broker, situation, command) for broker in ("kafka", "rabbitmq") for situation in ("closed", "unapplied")
             for command in COMMANDS] + [("rabbitmq", "refused", "publish"), ("rabbitmq", "refused", "tail")]


@pytest.mark.parametrize(("broker", "situation", "command"), SCENARIOS,
                         ids=[f"{b}-{s}-{c.replace(' ', '-')}" for b, s, c in SCENARIOS])
def test_broker_trouble_is_one_line(outcomes: dict[tuple[str, str, str], Outcome], broker: str, situation: str,
                                    command: str) -> None:
    if (broker, situation, command) not in outcomes:
        pytest.skip("`topo apply` on a topology not applied yet is the fix itself: it succeeds")
    outcome = outcomes[(broker, situation, command)]
    assert not [line for line in outcome.stderr.splitlines() if line.startswith("%")], outcome.stderr
    assert PASSWORD not in outcome.stderr
    if situation == "closed" and command == "run":
        assert outcome.notes == ("readyz 503", "alive True"), (outcome.notes, outcome.stderr)
        assert outcome.returncode == 0, outcome.stderr
        reports = [line for line in outcome.lines if "retrying" in line]
        assert len(reports) == 1 and SETTING[broker] in reports[0] and "127.0.0.1:1" in reports[0], outcome.stderr
        return
    assert outcome.returncode not in (None, 0), f"exit {outcome.returncode} after {outcome.seconds:.1f}s"
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith("error: "), line
    if situation == "unapplied":
        assert "does not exist" in line and f"`topo apply -t topology.yaml --broker {broker}`" in line, line
    elif situation == "refused":
        assert "refused the credentials of user 'guest'" in line and "RABBITMQ_URL" in line, line
    else:
        setting = "RABBITMQ_MANAGEMENT_URL" if broker == "rabbitmq" and command in ("lag", "apply") else SETTING[broker]
        assert "127.0.0.1:1" in line and setting in line, line


# ---------------------------------------------------------------- connection state of a running consumer


@pytest.fixture
def relay(rabbit_vhost: Any) -> Iterator[Relay]:
    parts = urllib.parse.urlsplit(rabbit_vhost.url)
    made = Relay((parts.hostname or "127.0.0.1", parts.port or 5672))
    made.open()
    yield made
    made.close()


@pytest.fixture
def client_log_levels() -> Iterator[None]:
    """`route_client_logs()` as `topo run` calls it, undone after the test."""
    names = ("pika", "pika.adapters", "topo.client.kafka")
    levels = {name: logging.getLogger(name).level for name in names}
    route_client_logs()
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_running_consumer_reports_a_lost_and_restored_broker_once_each(
        rabbit_vhost: Any, relay: Relay, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        client_log_levels: None) -> None:
    caplog.set_level(logging.INFO, "topo.runtime")
    doc = small_doc(f"bt{uuid.uuid4().hex[:8]}", ("indexer",))
    doc["broker"]["kind"] = "rabbitmq"
    topology = compile_topology(yaml.safe_load(yaml.safe_dump(doc)), tmp_path)
    provision_rabbitmq(topology, rabbit_vhost.url)
    parts = urllib.parse.urlsplit(rabbit_vhost.url)
    through_relay = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}").geturl()
    runtime = Runtime.from_generated(tmp_path, broker="rabbitmq", url=through_relay)
    runtime.register("indexer", lambda event: None)
    state = RuntimeState(["indexer"])
    runner = runtime.runner("indexer", state=state, shutdown_timeout=2)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()

    def connected() -> object:
        return state.readiness().details["connected"]

    try:
        wait_until(lambda: state.readiness().ok, 30, lambda: f"ready through the relay: {state.readiness()}")
        relay.close()
        wait_until(lambda: connected() is False, 15, "the lost connection to show in /readyz")
        relay.open()
        wait_until(lambda: state.readiness().ok, 30, lambda: f"ready again: {state.readiness()}")
    finally:
        runner.stop()
        thread.join(30)
        runtime.close()
    assert not thread.is_alive()
    said = [record.getMessage() for record in caplog.records if record.name == "topo.runtime"]
    lost = [line for line in said if "broker connection lost" in line]
    assert len(lost) == 1 and f"127.0.0.1:{relay.port}" in lost[0] and parts.password not in lost[0], said
    assert len([line for line in said if "broker connection restored" in line]) == 1, said
    client = [record.getMessage() for record in caplog.records
              if record.name.startswith("pika") and record.levelno >= logging.WARNING]
    assert not client, client  # pika's own account of the cut connection stays below the default level


def test_broker_link_reports_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "topo.runtime")
    state = RuntimeState(["g"])
    link = BrokerLink("g", state)
    answers = iter([BrokerUnreachable("down at 127.0.0.1:1"), BrokerUnreachable("down at 127.0.0.1:1"), None])

    def probe() -> None:
        link.backoff = 0.01  # keep the test quick: the backoff itself is not what is checked
        answer = next(answers)
        if answer is not None:
            raise answer

    assert link.reach(probe, threading.Event(), None)
    assert state.readiness().details["connected"] is False
    link.up()
    link.up()
    link.down("gone")
    link.down("gone")
    link.up()
    said = [record.getMessage() for record in caplog.records]
    assert [line.split(":")[1].strip() for line in said] == [
        "down at 127.0.0.1", "broker reachable now", "broker connection lost", "broker connection restored"], said
    assert state.readiness().details["connected"] is True


def test_repeated_client_messages_are_counted_not_printed() -> None:
    now = [0.0]
    repeats = RepeatFilter(window=60, clock=lambda: now[0])

    def passes(text: str, name: str = "topo.client.kafka") -> bool:
        return repeats.filter(logging.LogRecord(name, logging.ERROR, __file__, 1, text, None, None))

    assert passes("Connect to 127.0.0.1:1 failed (after 3ms in state CONNECT)")
    assert not passes("Connect to 127.0.0.1:1 failed (after 7ms in state CONNECT)")
    assert not passes("Connect to 127.0.0.1:1 failed (after 0ms in state CONNECT)")
    assert passes("another message")
    assert passes("not a client logger", name="topo.runtime") and passes("not a client logger", name="topo.runtime")
    now[0] = 61.0
    record = logging.LogRecord("topo.client.kafka", logging.ERROR, __file__, 1,
                               "Connect to 127.0.0.1:1 failed (after 1ms in state CONNECT)", None, None)
    assert repeats.filter(record)
    assert record.getMessage().endswith("(repeated 2 more times in 60s)")


def test_librdkafka_connection_failures_are_demoted_and_remembered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "topo.client.kafka")
    client_log = KafkaClientLog()
    client_log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                   "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
                   "Connection refused (after 0ms in state CONNECT)")
    client_log.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "[thrd:app]: odd setting")
    assert client_log.last_failure == "Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    assert [(r.levelno, r.getMessage().split(" ")[0]) for r in caplog.records] == [
        (logging.INFO, "FAIL"), (logging.WARNING, "CONFWARN")]


def test_a_kafka_consumer_reports_all_brokers_down_and_notices_when_they_answer_again(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka reconnects by itself: its all-brokers-down error marks the consumer
    disconnected (the runner reports it), and a metadata answer while polling marks it connected."""
    from confluent_kafka import KafkaError

    from topo.runtime.transport.base import ConsumeOptions
    from topo.runtime.transport.kafka.consumer import KafkaConsumer

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    topology = compile_topology(small_doc(f"bt{uuid.uuid4().hex[:8]}", ("indexer",)), tmp_path)
    consumer = KafkaConsumer(topology, topology.group("indexer"), ConsumeOptions(max_in_flight=10))
    try:
        assert consumer.connected
        consumer._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert not consumer.connected
        assert kafka_bootstrap in consumer.disconnect_reason and "KAFKA_BOOTSTRAP_SERVERS" in consumer.disconnect_reason
        wait_until(lambda: consumer.poll(1, 0.1) is not None and consumer.connected, 15,
                   "a metadata answer to mark the consumer connected again")
    finally:
        consumer.close()
