"""`topo run` processes sharing one PostgreSQL processed store: kill -9 and restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from topologies import Bus, drop_tables

from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("needs_processes")]


@dataclass
class Shared:
    """A PostgreSQL store and an effects table of this test's own."""

    url: str
    store_table: str
    effects_table: str

    def rows(self) -> list[tuple[int, str, str, int, int]]:
        with psycopg.connect(self.url) as connection:
            return list(connection.execute(sql.SQL("SELECT id, event_id, key, seq, pid FROM {} ORDER BY id").format(
                sql.Identifier(self.effects_table))))


@pytest.fixture
def shared(postgres_url: str) -> Iterator[Shared]:
    suffix = uuid.uuid4().hex[:10]
    store = Shared(postgres_url, f"processed_{suffix}", f"effects_{suffix}")
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, event_id text NOT NULL, "
                                   "event_type text NOT NULL, key text NOT NULL, seq integer NOT NULL, "
                                   "pid integer NOT NULL)").format(sql.Identifier(store.effects_table)))
    yield store
    drop_tables(postgres_url, store.store_table, store.effects_table)


def beta_bus(make_bus: Callable[..., Bus], shared: Shared) -> Bus:
    bus = make_bus(groups={"beta": {"handler": "rt_handlers:record_pg",
                                    "dedup": {"store": "postgres", "dsn": "${RT_DATABASE_URL}",
                                              "table": shared.store_table}}})
    bus.env.update(RT_DATABASE_URL=shared.url, RT_EFFECTS_TABLE=shared.effects_table)
    return bus


def start(bus: Bus, sleep: float = 0.0) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "topo", "run", "--group", "beta", "--topology", str(bus.topology_file),
               "--broker", bus.kind, "--shutdown-timeout", "5", "--log-level", "warning"]
    return subprocess.Popen(command, env={**bus.env, "RT_HANDLER_SLEEP": str(sleep)})


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def publish(bus: Bus, count: int, senders: int, first_seq: int = 0) -> set[str]:
    runtime = bus.runtime()
    module = runtime.classes.module
    ids = {str(runtime.publisher().publish(module.TxSeen(chain_id=(1, 138)[i % 2], sender=f"s{i % senders}",
                                                            seq=first_seq + i)).event_id) for i in range(count)}
    assert runtime.publisher().flush(60) == 0
    return ids


def test_three_processes_share_one_store_two_are_killed_and_restarted_effects_once_in_order(
        make_bus: Callable[..., Bus], shared: Shared) -> None:
    bus = beta_bus(make_bus, shared)
    senders = 30
    ids = publish(bus, 2000, senders=senders)
    processes = [start(bus, sleep=0.002) for _ in range(3)]
    try:
        wait_until(lambda: len(shared.rows()) > 300, 90, "the processes to start handling", interval=0.2)
        for victim in processes[:2]:
            victim.kill()  # SIGKILL: no drain, no commit of offsets or of the open store transaction
            victim.wait(10)
        killed_at = len(shared.rows())
        assert killed_at < len(ids), "every event was handled before the kill"
        processes[:2] = [start(bus, sleep=0.002) for _ in range(2)]
        wait_until(lambda: len(shared.rows()) >= len(ids), 150, "every event handled after the restarts",
                   interval=0.5)
        # One marker per key behind everything else of that key: a redelivery that would double a
        # side effect comes before its key's marker, so once the markers are handled every such
        # redelivery has been too.
        markers = publish(bus, senders, senders=senders, first_seq=len(ids))
        wait_until(lambda: markers <= {r[1] for r in shared.rows()}, 120, "the markers handled", interval=0.5)
    finally:
        for process in processes:
            stop(process)
    rows = shared.rows()
    handled = [r for r in rows if r[1] not in markers]
    assert {r[1] for r in handled} == ids
    assert len(handled) == len(ids), f"{len(handled) - len(ids)} side effects happened twice"
    assert len({r[4] for r in rows}) >= 3, "killed and restarted processes all handled events"
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, _, key, seq, _ in rows:
        by_key[key].append(seq)
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key} handled out of order: {seqs}"
