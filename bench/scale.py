"""Scale figures: consume throughput with 1, 2 and 4 `topo run` processes, memory per process, and
`topo generate` on a large topology.

    python bench/scale.py [--events 120000] [--processes 1 2 4] [--dedup 10000 100000 1000000]
                          [--in-flight 10000] [--event-types 1000] [--chains 50] [--skip consume,memory,generate]

* consume: a 6-partition topic (one throwaway topology, provisioned with `topo apply`), `--events`
  envelopes published before each run, then N `topo run` processes of one group with a no-op
  handler (the default mode); throughput is read from the group's committed offsets, between 10%
  and 90% of the run (start-up and the last commit interval left out);
* memory: resident set size (VmRSS) of a process that imported the runtime and holds N entries in
  the in-memory dedup store (event ids as the runtime keys them: the UUID's integer), and of a
  `topo run --concurrency 8` process holding `--in-flight` events in flight (max_in_flight 10k, a
  handler that blocks), against the same process idle;
* generate: a synthetic topology of `--event-types` event types x `--chains` chains
  (bench/generate.py's synthesiser) written to a temporary folder, then `topo generate -t FILE -o DIR`
  as a user runs it, timed as a whole (process start included).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script by `python -m bench`

from bench.generate import synthesise
from bench.runtime import payload_dict, raw_envelope, topology_doc
from topo.core.interpolate import expand
from topo.runtime.transport.kafka import PRODUCER_TUNING

TOPO = str(Path(sys.executable).with_name("topo"))
HANDLERS = '''import threading
import time

release = threading.Event()


def handle(event):
    pass


def block(event):
    release.wait(600)  # holds its worker: the events behind it stay in flight
'''


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc (Linux only)")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


# --------------------------------------------------------------------------- the topology


class Project:
    """A throwaway topology on disk: 6 partitions, the group `scale` (no-op handler) and the group
    `held` (a blocking handler, max_in_flight 10k); applied to Kafka, its topics deleted on exit."""

    def __init__(self, folder: Path, bootstrap: str, in_flight: int) -> None:
        self.folder = folder
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        self.name = f"bench-scale-{uuid.uuid4().hex[:6]}"
        doc = topology_doc(self.name)
        doc["broker"]["kafka"]["partitions"] = 6
        doc["consumer_groups"] = {
            "scale": {"subscribes": ["token.transfer"], "handler": "scale_handlers:handle", "max_in_flight": 2000},
            "held": {"subscribes": ["token.transfer"], "handler": "scale_handlers:block", "max_in_flight": in_flight},
        }
        (folder / "topology.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        (folder / "scale_handlers.py").write_text(HANDLERS)
        self.topo("generate", "-t", "topology.yaml", "-o", "generated")
        self.topo("apply", "-t", "topology.yaml", "--broker", "kafka", "--yes")
        compiled = json.loads((folder / "generated" / "topology.json").read_text())
        self.topic = f"{self.name}.token.transfer.138"
        self.compiled = compiled
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_TUNING})

    def topo(self, *arguments: str) -> None:
        subprocess.run([TOPO, *arguments], cwd=self.folder, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def group_id(self, group: str) -> str:
        return f"{self.name}.{group}"

    def publish(self, count: int) -> None:
        for index in range(count):
            payload = payload_dict(index)
            self.producer.produce(self.topic, raw_envelope(payload, time.time()), str(payload["token_address"]))
            if index % 1000 == 0:
                self.producer.poll(0)
        if self.producer.flush(120):
            raise RuntimeError("events not confirmed within 120 s")

    def committed(self, group: str) -> int:
        from confluent_kafka import ConsumerGroupTopicPartitions

        request = ConsumerGroupTopicPartitions(self.group_id(group), [TopicPartition(self.topic, p) for p in range(6)])
        answer = self.admin.list_consumer_group_offsets([request])[self.group_id(group)].result(30)
        return sum(max(0, part.offset) for part in answer.topic_partitions)

    def run(self, group: str, count: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        return [subprocess.Popen([TOPO, "run", "-t", "topology.yaml", "--group", group, *extra], cwd=self.folder,
                                 env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(count)]

    def delete(self) -> None:
        topics = [self.topic, *self.admin.list_topics(timeout=30).topics]
        mine = [t for t in topics if t.startswith(self.name)]
        for future in self.admin.delete_topics(sorted(set(mine)), operation_timeout=30).values():
            future.result(60)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- the figures


def consume_scaling(project: Project, events: int, counts: list[int]) -> list[tuple[str, str]]:
    rows = []
    for count in counts:
        base = project.committed("scale")
        project.publish(events)
        processes = project.run("scale", count)
        marks: dict[float, float] = {}
        try:
            deadline = time.monotonic() + 600
            while len(marks) < 2 and time.monotonic() < deadline:
                done = project.committed("scale") - base
                for fraction in (0.1, 0.9):
                    if fraction not in marks and done >= fraction * events:
                        marks[fraction] = time.monotonic()
                time.sleep(0.05)
        finally:
            stop(processes)
        if len(marks) < 2:
            raise TimeoutError(f"{count} processes did not consume {events} events within 600 s")
        rate = 0.8 * events / (marks[0.9] - marks[0.1])
        rows.append((f"consume, {count} `topo run` process{'es' if count > 1 else ''}, 6 partitions (events/s)",
                     f"{rate:,.0f}"))
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def dedup_memory(entries: list[int]) -> list[tuple[str, str]]:
    rows = []
    for count in entries:
        child = subprocess.run([sys.executable, __file__, "--child-dedup", str(count)], check=True,
                               capture_output=True, text=True)
        before, after = (int(value) for value in child.stdout.split())
        rows.append((f"RSS with {count:,} dedup entries (MiB; bytes per entry)",
                     f"{after / 1024:,.0f} ({(after - before) * 1024 / count:,.0f} B/entry)"))
    return rows


def child_dedup(count: int) -> None:
    """In a fresh process: RSS after importing the runtime, and after `count` dedup entries."""
    from topo.runtime.app import Runtime  # noqa: F401 - what a `topo run` process has loaded
    from topo.runtime.dedup import MemoryStore

    store = MemoryStore(count)
    before = rss_kib()
    for _ in range(count):
        store.add(uuid.uuid4().int, None)
    print(before, rss_kib())


def in_flight_memory(project: Project, in_flight: int) -> list[tuple[str, str]]:
    project.publish(in_flight * 3 // 2)
    # Worker threads: inline, the first blocked call would hold the loop and nothing more be fetched.
    process = project.run("held", 1, "--metrics-port", "0", "--concurrency", "8")[0]
    try:
        assert process.stderr is not None
        port = wait_for(lambda: _metrics_port(process), 60, "`topo run` to print its metrics port")
        idle = rss_kib(process.pid)
        held = wait_for(lambda: _in_flight(port) >= in_flight * 9 // 10 and _in_flight(port), 120,
                        f"{in_flight} events in flight")
        time.sleep(1)  # the client's prefetch settles
        full = rss_kib(process.pid)
    finally:
        stop([process])
    return [(f"RSS of `topo run` idle / with {held:,.0f} events in flight (MiB)",
             f"{idle / 1024:,.0f} / {full / 1024:,.0f} ({(full - idle) * 1024 / held:,.0f} B/event)")]


def _metrics_port(process: subprocess.Popen[bytes]) -> int | None:
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    if line.startswith("metrics on :"):
        return int(line.split(":")[1])
    if process.poll() is not None:
        raise RuntimeError(f"`topo run` exited: {line}")
    return None


def _in_flight(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("topo_in_flight_events{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def generate_time(event_types: int, chains: int) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "topology.yaml"
        path.write_text(yaml.safe_dump(synthesise(event_types, chains, 8), sort_keys=False))
        started = time.perf_counter()
        subprocess.run([TOPO, "generate", "-t", str(path), "-o", str(Path(temp) / "generated")], check=True,
                       stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        files = sum(1 for p in (Path(temp) / "generated").rglob("*") if p.is_file())
    return [(f"`topo generate`, {event_types:,} event types x {chains} chains (s; files written)",
             f"{elapsed:.1f} ({files:,} files)")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dedup", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--event-types", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--skip", default="", help="comma-separated: consume, memory, generate")
    parser.add_argument("--child-dedup", type=int, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child_dedup is not None:
        child_dedup(options.child_dedup)
        return 0
    skip = set(filter(None, options.skip.split(",")))
    rows: list[tuple[str, str]] = []
    if not {"consume", "memory"} <= skip:
        bootstrap = expand("${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}")
        with tempfile.TemporaryDirectory() as temp:
            project = Project(Path(temp), bootstrap, options.in_flight)
            try:
                if "consume" not in skip:
                    rows += consume_scaling(project, options.events, options.processes)
                if "memory" not in skip:
                    rows += in_flight_memory(project, options.in_flight)
            finally:
                project.delete()
    if "memory" not in skip:
        rows += dedup_memory(options.dedup)
    if "generate" not in skip:
        rows += generate_time(options.event_types, options.chains)
    width = max(len(label) for label, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
