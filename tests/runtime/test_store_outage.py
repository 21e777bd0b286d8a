"""A PostgreSQL processed store that goes away for 20 s under a running `topo run` (its own server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from topologies import Bus

from dev import brokers
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

OUTAGE = 20.0  # seconds the server is down


@pytest.fixture
def own_postgres() -> Iterator[brokers.PostgresServer]:
    """A PostgreSQL server of this test's own on a free port: stopping it never disturbs the shared one."""
    if brokers.postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed (make brokers-up installs it)")
    folder = Path(tempfile.mkdtemp(prefix="topo-pg-outage-"))
    folder.chmod(0o755)  # the server runs as the `postgres` user when we are root
    server = brokers.PostgresServer(folder / "pg", brokers.free_port())
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


def committed(bus: Bus) -> int:
    """The sum of the group's committed offsets (what it has acknowledged) on Kafka."""
    group = bus.topology.group("beta")
    consumer = Consumer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "group.id": group.kafka.group_id,
                         "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for s in group.subscriptions for topic in s.topics
                      for p in range(bus.topology.event(s.event).kafka.partitions)]
        return sum(max(0, tp.offset) for tp in consumer.committed(partitions, timeout=30))
    finally:
        consumer.close()


def readiness(port: int) -> tuple[int, str]:
    try:
        response = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except requests.RequestException as error:
        return 0, str(error)
    return response.status_code, response.text


def test_postgres_down_for_20s_stops_acknowledging_turns_not_ready_and_resumes_losing_nothing(
        make_bus: Callable[..., Bus], transport_kind: str, own_postgres: brokers.PostgresServer) -> None:
    if transport_kind != "kafka":
        pytest.skip("not applicable: the store outage path is transport-neutral (topo.runtime.group_commit); "
                    "run once, on Kafka, where acknowledged means committed offsets")
    url = own_postgres.url
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE effects (id bigserial PRIMARY KEY, event_id text NOT NULL, "
                           "event_type text NOT NULL, key text NOT NULL, seq integer NOT NULL, pid integer NOT NULL)")

    def rows() -> list[tuple[str, int]]:
        try:
            with psycopg.connect(url, connect_timeout=5) as connection:
                return [(str(a), int(b)) for a, b in connection.execute("SELECT event_id, seq FROM effects")]
        except psycopg.OperationalError:
            return []

    bus = make_bus(groups={"beta": {"handler": "rt_handlers:record_pg",
                                    "dedup": {"store": "postgres", "dsn": "${RT_DATABASE_URL}"}}})
    runtime = bus.runtime()
    module = runtime.classes.module
    ids = {str(runtime.publisher().publish(module.TxSeen(chain_id=1, sender=f"s{i % 20}", seq=i)).event_id)
           for i in range(3000)}
    assert runtime.publisher().flush(60) == 0
    port = brokers.free_port()
    command = [sys.executable, "-m", "topo", "run", "--group", "beta", "--topology", str(bus.topology_file),
               "--broker", bus.kind, "--metrics-port", str(port), "--log-level", "warning"]
    env = {**bus.env, "RT_DATABASE_URL": url, "RT_EFFECTS_TABLE": "effects", "RT_HANDLER_SLEEP": "0.003"}
    process = subprocess.Popen(command, env=env)
    try:
        wait_until(lambda: len(rows()) > 300, 90, "handling to start", interval=0.2)
        wait_until(lambda: readiness(port)[0] == 200, 30, "/readyz ready while the store is up", interval=0.2)
        own_postgres.stop("fast")  # disconnects the clients, rolls back their open transactions
        down_at = time.monotonic()
        wait_until(lambda: readiness(port)[0] == 503 and "processed store unavailable" in readiness(port)[1],
                   15, "/readyz to say the store is unavailable", interval=0.2)
        # Acknowledgements already handed over before the stop may still be committed (every 200 ms);
        # from then on nothing may be: the committed offsets stand still for the rest of the outage.
        wait_until(lambda: time.monotonic() - down_at > 3, 10, "the last acknowledgements to settle", interval=0.5)
        acknowledged = committed(bus)
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE, OUTAGE + 5, "the outage's end", interval=0.5)
        assert committed(bus) == acknowledged, "events were acknowledged while the store was down"
        assert acknowledged < len(ids), "every event was acknowledged before the outage"
        assert process.poll() is None, "topo run exited during the store outage"
        own_postgres.start()
        wait_until(lambda: len(rows()) >= len(ids), 120, "every event handled after the store came back",
                   interval=0.5)
        wait_until(lambda: readiness(port)[0] == 200, 30, "/readyz ready again", interval=0.2)
        wait_until(lambda: committed(bus) == len(ids), 60, "every event acknowledged", interval=0.5)
    finally:
        process.terminate()
        process.wait(30)
    handled = rows()
    assert {event_id for event_id, _ in handled} == ids, "events lost"
    assert len(handled) == len(ids), f"{len(handled) - len(ids)} side effects happened twice"
