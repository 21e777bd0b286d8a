"""A bus under faults: one topology on the local cluster, a publisher process, three `topo run`
processes, and the history they leave.

The topology has one ordered event `item.added` (key `item`, payload `seq`) on three partitions
(Kafka, replication factor 3, `min.insync.replicas` 2) or three quorum queues (RabbitMQ,
replicated over the three nodes), and one group `sink` whose handler writes each event as a row
through the shared SQLite dedup store's transaction (`fault_handlers.record`). Everything goes
into one history directory (tests/support/history.py): the publisher's attempts and outcomes
(`fault_publisher`), each handler invocation, the test's fault start/end, and, read from the
store when the run is over, one `handled` record per committed side effect (its row: the ground
truth of what committed). `tests.support.history_check.check_history` judges it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support.history import HistoryRecorder, Record, read_history
from tests.support.history_check import HistoryReport, check_history
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOPO = [sys.executable, "-m", "topo"]
EVENT = "item.added"
GROUP = "sink"
CONSUMERS = 3
RATE = 40.0  # events per second
KEYS = 6
START_TIMEOUT = 120.0
DRAIN_TIMEOUT = 180.0


def document(name: str, broker: str, delivery: str, store: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        # replication factor 3 and min.insync.replicas 2 (the default with 3 replicas): an
        # acknowledged write is on two replicas before the publisher hears of it
        "broker": {"kind": broker, "kafka": {"partitions": 3, "replication_factor": 3, "min_insync_replicas": 2},
                   "rabbitmq": {"exchange": f"{name}.events", "partitions": 3}},
        "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "chains": {1: {"name": "ethereum"}},
        "events": {EVENT: {"producers": ["feeder"], "key": "item", "ordered": True,
                           "payload": {"item": "string", "seq": "integer"}}},
        "consumer_groups": {GROUP: {"subscribes": [EVENT], "handler": "fault_handlers:record",
                                    "delivery": delivery, "retry": {"max_retries": 2},
                                    "dedup": {"store": "sqlite", "path": str(store)}}},
    }


def read_effects(database: Path) -> list[tuple[int, str, str, int, int, float]]:
    """(commit order, event id, key, seq, pid, time) of every committed side effect, in commit order."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
        try:
            return list(connection.execute("SELECT id, event_id, key, seq, pid, t FROM effects ORDER BY id"))
        except sqlite3.OperationalError:  # no event handled yet: no table
            return []


def acknowledged(history_dir: Path) -> set[str]:
    return {record.id for record in read_history(history_dir).of("ack") if record.id is not None}


class FaultBus:
    """The topology, its publisher and consumer processes in `folder`, on the cluster of `env`."""

    def __init__(self, folder: Path, broker: str, env: dict[str, str], delivery: str = "at_least_once") -> None:
        self.folder = folder
        self.broker = broker
        self.name = f"ft{uuid.uuid4().hex[:8]}"
        self.store = folder / "dedup.sqlite3"
        self.history = folder / "history"
        self.recorder = HistoryRecorder(self.history, "test")
        self.stop_file = folder / "stop-publishing"
        pythonpath = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
        self.env = {**os.environ, **env, "PYTHONPATH": pythonpath, "TOPO_BROKER": broker,
                    "TOPO_HISTORY_DIR": str(self.history)}
        source = folder / "topology.yaml"
        source.write_text(yaml.safe_dump(document(self.name, broker, delivery, self.store), sort_keys=False))
        self.topo_ok("generate", "-t", str(source), "-o", str(folder / "generated"))
        self.topology = str(folder / "generated" / "topology.json")
        self.topo_ok("apply", "-t", self.topology, "--yes")
        self.consumers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.publisher: subprocess.Popen[bytes] | None = None
        self.faults: list[str] = []

    def topo_ok(self, *args: str) -> str:
        done = subprocess.run([*TOPO, *args], env=self.env, cwd=self.folder, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, f"topo {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # ---- processes

    def start_consumer(self, index: int, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> None:
        log = self.folder / f"consumer-{index}.log"
        with log.open("ab") as out:
            process = subprocess.Popen([*prefix, *TOPO, "run", "-g", GROUP, "-t", self.topology, "--metrics-port",
                                        "0", "--shutdown-timeout", "10"], env={**self.env, **(env or {})},
                                       cwd=self.folder, stdout=out, stderr=subprocess.STDOUT)
        self.consumers.append((process, log))

    def consumer_port(self, index: int) -> int | None:
        found = re.findall(r"metrics on :(\d+)", self.consumers[index][1].read_text(errors="replace"))
        return int(found[-1]) if found else None

    def ready(self, index: int) -> bool:
        port = self.consumer_port(index)
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
                return int(answer.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> None:
        """Three consumers, ready, then the publisher."""
        for index in range(CONSUMERS):
            self.start_consumer(index)
        for index in range(CONSUMERS):
            wait_until(lambda i=index: self.ready(i) or self.consumers[i][0].poll() is not None, START_TIMEOUT,
                       lambda i=index: f"consumer {i} to be ready:\n{self.consumers[i][1].read_text()[-3000:]}")
            assert self.consumers[index][0].poll() is None, self.consumers[index][1].read_text()[-3000:]
        self.start_publisher()

    def start_publisher(self) -> None:
        """The publisher process; returns once a first event was handled."""
        with (self.folder / "publisher.log").open("ab") as out:
            self.publisher = subprocess.Popen(
                [sys.executable, "-m", "fault_publisher", str(self.folder / "generated"), self.broker,
                 str(self.history), str(self.stop_file), str(RATE), str(KEYS)],
                env=self.env, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.handled() > 0, START_TIMEOUT,
                   lambda: f"a first handled event; publisher said:\n{self.log('publisher')}")

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def handled(self) -> int:
        return len(read_effects(self.store))

    def fault(self, name: str, phase: str) -> None:
        """Record the start or end of an injected fault."""
        if phase == "start":
            self.faults.append(name)
        self.recorder.fault(name, "start" if phase == "start" else "end")

    def finish(self) -> HistoryReport:
        """Stop publishing, wait until every acknowledged event is handled (bounded), stop the
        consumers (SIGTERM), add the committed side effects to the history and judge it."""
        self.stop_file.touch()
        assert self.publisher is not None
        try:
            assert self.publisher.wait(120) == 0, self.log("publisher")
        except subprocess.TimeoutExpired:
            self.publisher.kill()
            raise

        def missing() -> set[str]:
            return acknowledged(self.history) - {row[1] for row in read_effects(self.store)}

        with contextlib.suppress(AssertionError):  # the report below names what is missing
            wait_until(lambda: not missing(), DRAIN_TIMEOUT, lambda: f"{len(missing())} acknowledged events handled")
        self.stop_consumers()
        with (self.history / "effects.jsonl").open("w") as out:
            for _order, event_id, key, seq, pid, moment in read_effects(self.store):
                record = Record(kind="handled", t=int(moment * 1e9), process=f"consumer-{pid}", pid=pid, id=event_id,
                                key=key, seq=seq)
                out.write(record.to_json() + "\n")
        return check_history(read_history(self.history))

    def stop_consumers(self) -> None:
        for process, _log in self.consumers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _log in self.consumers:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def close(self) -> None:
        """Whatever still runs (a failed test) is killed."""
        self.stop_file.touch()
        for process in [p for p, _ in self.consumers] + ([self.publisher] if self.publisher else []):
            if process.poll() is None:
                process.kill()
                process.wait(10)
