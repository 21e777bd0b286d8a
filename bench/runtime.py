"""The runtime versus the raw client, in one run on the same broker.

    python bench/runtime.py [--events 30000] [--rounds 5] [--rate 1000] [--seconds 5] [--concurrency N] [--threaded 8]
                            [--sleepers 4000]

Kafka (confluent-kafka), same payload bytes and producer settings on both sides:

* publish: raw `Producer.produce` of an envelope built with uuid4 + timestamp + `json.dumps` (the
  work the runtime does) with a delivery callback and `poll(0)`, versus `Publisher.publish` of a
  generated payload instance; both end with `flush()`;
* consume: a raw consumer loop (`consume` batches, `json.loads` of each value, asynchronous
  commit per batch) versus a `topo` consumer group with a no-op handler (validation into the
  typed envelope, dedup, per-key dispatch, contiguous-offset commits), run in `topo run`'s
  default mode (adaptive: this no-op handler runs on the consume thread, like the raw loop) or
  `--concurrency N`, and, on a second row, with `--threaded` worker threads (default 8);
* a handler sleeping 2 ms (`--sleepers` events per round): the default mode against
  `--concurrency 8`, rounds alternating (the default must move such handlers to worker threads);
* throughput is measured in `--rounds` rounds, raw and topo back to back in each; the table gives
  the best round of each side and, below it, the median of the per-round ratios;
* latency: events published at `--rate` per second for `--seconds`; each side measures now minus
  the envelope timestamp when its handler sees the event; p50 and p99.

Each side gets its own topics (two throwaway topologies with unique names), deleted at the end.
RabbitMQ's transport-level comparison is bench/runtime_rabbitmq.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from topo.core.interpolate import expand
from topo.core.model import Topology
from topo.generator.emit import emit_all
from topo.generator.resolve import resolve
from topo.runtime.app import Runtime
from topo.runtime.process import tune_garbage_collector
from topo.runtime.runner import GroupRunner
from topo.runtime.transport.kafka import PRODUCER_TUNING

PAYLOAD = {"token_address": "0x" + "1" * 40, "from_address": "0x" + "2" * 40, "to_address": "0x" + "3" * 40,
           "amount": "1000000000000000000", "transaction_hash": "0x" + "a" * 64, "log_index": 7}


def topology_doc(name: str) -> dict[str, Any]:
    return {
        "version": 1, "name": name, "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "broker": {"kind": "kafka", "kafka": {"partitions": 3, "replication_factor": 1}},
        "chains": {138: {"name": "meta"}},
        "events": {"token.transfer": {"producers": ["indexer"], "key": "token_address", "ordered": True, "payload": {
            "token_address": "address", "from_address": "address", "to_address": "address", "amount": "uint256",
            "transaction_hash": "hash32", "log_index": {"type": "integer", "minimum": 0}}}},
        "consumer_groups": {"bench": {"subscribes": ["token.transfer"], "max_in_flight": 2000}},
    }


def compile_into(name: str, folder: Path) -> Topology:
    topology = resolve(topology_doc(name))
    for relative, text in emit_all(topology).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return topology


def topics_of(topology: Topology) -> list[NewTopic]:
    names = [(t.topic, 3) for e in topology.events for t in e.topics]
    names += [(g.kafka.dlq_topic, 1) for g in topology.groups]
    names += [(r.name, 1) for g in topology.groups for r in g.kafka.retry_topics]
    return [NewTopic(name, num_partitions=count, replication_factor=1) for name, count in names]


def raw_envelope(payload: dict[str, Any], now: float) -> bytes:
    return json.dumps({"event_type": "token.transfer", "event_id": str(uuid.uuid4()),
                       "timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "chain_id": 138, "payload": payload,
                       "metadata": {"producer": "indexer", "version": "1.0"}}, separators=(",", ":")).encode()


def payload_dict(index: int) -> dict[str, Any]:
    return {"chain_id": 138, **PAYLOAD, "token_address": f"0x{index % 1000:040x}", "log_index": index}


class Side(ABC):
    """One side of the comparison: publish N, consume N, and a paced latency run."""

    @abstractmethod
    def publish(self, count: int) -> float: ...

    @abstractmethod
    def consume(self, count: int) -> float: ...

    @abstractmethod
    def latency(self, rate: int, seconds: float) -> list[float]: ...


class RawKafka(Side):
    def __init__(self, topology: Topology, bootstrap: str) -> None:
        self.topic = topology.events[0].topics[0].topic
        self.bootstrap = bootstrap
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_TUNING})
        self.errors = 0

    def _report(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.errors += 1

    def _send(self, index: int) -> None:
        payload = payload_dict(index)
        self.producer.produce(self.topic, raw_envelope(payload, time.time()), payload["token_address"].encode(),
                              on_delivery=self._report)
        self.producer.poll(0)

    def publish(self, count: int) -> float:
        payloads = [payload_dict(i) for i in range(count)]  # built up front on both sides
        started = time.perf_counter()
        for payload in payloads:
            self.producer.produce(self.topic, raw_envelope(payload, time.time()), payload["token_address"].encode(),
                                  on_delivery=self._report)
            self.producer.poll(0)
        self.producer.flush(120)
        return count / (time.perf_counter() - started)

    def _consumer(self, group: str, start: str = "earliest") -> Consumer:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": start, "fetch.wait.max.ms": 100})
        consumer.subscribe([self.topic])
        return consumer

    @staticmethod
    def _batch(consumer: Consumer, timeout: float) -> list[Any]:
        # The same fetch pattern as the runtime: first message as soon as it is there, then the
        # rest of what is already fetched.
        first = consumer.poll(timeout)
        return [] if first is None else [first, *consumer.consume(499, 0)]

    def consume(self, count: int) -> float:
        consumer = self._consumer(f"raw-{uuid.uuid4().hex[:6]}")
        seen, started = 0, None
        while seen < count:
            batch = self._batch(consumer, 0.5)
            for message in batch:
                if message.error() is None:
                    json.loads(message.value())
                    seen += 1
            if batch:
                started = started or time.perf_counter()
                consumer.commit(asynchronous=True)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        consumer.close()
        return count / elapsed

    def latency(self, rate: int, seconds: float) -> list[float]:
        # A new group: from the end of the log, not through the throughput rounds' backlog (the
        # runtime's group resumes from its committed position, also at the end).
        consumer = self._consumer(f"raw-latency-{uuid.uuid4().hex[:6]}", start="latest")
        samples: list[float] = []
        total = int(rate * seconds)
        ready = threading.Event()

        def read() -> None:
            while len(samples) < total:
                batch = self._batch(consumer, 0.1)
                if len(consumer.assignment()) >= 3:  # joined: every partition is read from now on
                    ready.set()
                for message in batch:
                    if message.error() is None:
                        document = json.loads(message.value())
                        if document["payload"]["log_index"] >= 10**9:
                            stamp = datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00"))
                            samples.append(time.time() - stamp.timestamp())
                if batch:
                    consumer.commit(asynchronous=True)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ready.wait(30)
        time.sleep(2)  # the assignment stays put before the clock starts, as on the runtime side
        paced(rate, total, lambda i: self._send(10**9 + i))
        reader.join(seconds + 30)
        consumer.close()
        return samples


class RuntimeBench(Side):
    """The runtime on `broker`: `Publisher.publish` and a `bench` consumer group with a given handler."""

    def __init__(self, folder: Path, concurrency: int | None, broker: str = "kafka") -> None:
        self.concurrency = concurrency
        self.runtime = Runtime.from_generated(folder, broker=broker, producer="indexer")
        self.module = self.runtime.classes.module
        self.publisher = self.runtime.publisher()
        self.runner: GroupRunner | None = None

    def _send(self, index: int) -> None:
        self.publisher.publish(self.module.TokenTransfer(**payload_dict(index)))

    def publish(self, count: int) -> float:
        payloads = [self.module.TokenTransfer(**payload_dict(i)) for i in range(count)]
        started = time.perf_counter()
        for payload in payloads:
            self.publisher.publish(payload)
        self.publisher.flush(120)
        return count / (time.perf_counter() - started)

    def _run(self, handler: Callable[[Any], None], done: Callable[[], bool], timeout: float
             ) -> Callable[[float], None]:
        """Run the group on a thread until `done()`; returns `join(limit)`, which re-raises what
        stopped the run (UntilTimeout when `done()` stayed false): no figure from a failed run."""
        self.runtime.registry = type(self.runtime.registry)()
        self.runtime.register("bench", handler)
        runner = self.runner = self.runtime.runner("bench", concurrency=self.concurrency)
        failures: list[BaseException] = []

        def consume() -> None:
            try:
                runner.run(until=done, timeout=timeout)
            except BaseException as error:
                failures.append(error)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()

        def join(limit: float) -> None:
            thread.join(limit)
            if failures:
                raise failures[0]

        return join

    def consume(self, count: int, sleep: float = 0.0) -> float:
        seen = [0]
        first: list[float] = []

        def handle(_event: Any) -> None:
            if not first:
                first.append(time.perf_counter())
            if sleep:
                time.sleep(sleep)
            seen[0] += 1

        join = self._run(handle, lambda: seen[0] >= count, 300)
        join(310)
        return count / (time.perf_counter() - first[0])

    def latency(self, rate: int, seconds: float) -> list[float]:
        samples: list[float] = []
        total = int(rate * seconds)

        def handle(event: Any) -> None:
            if event.payload.log_index >= 10**9:
                samples.append(time.time() - event.timestamp.timestamp())

        join = self._run(handle, lambda: len(samples) >= total, seconds + 90)
        deadline = time.monotonic() + 60
        # The group re-forms after the consume run: start the clock once this member owns every
        # partition and the assignment has been stable for a while.
        stable_since = None
        while time.monotonic() < deadline:
            owned = len(self.runner.generations) if self.runner else 0
            if owned >= 3:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since > 2:
                    break
            else:
                stable_since = None
            time.sleep(0.05)
        paced(rate, total, lambda i: self._send(10**9 + i))
        self.publisher.flush(30)
        join(seconds + 60)
        return samples


def paced(rate: int, total: int, send: Callable[[int], None]) -> None:
    started = time.perf_counter()
    for index in range(total):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(index)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


Row = tuple[str, str, str, str, str]


def throughput_rows(label: str, raw: list[float], ours: list[float], target: str) -> list[Row]:
    """Best of the rounds on each side (the least disturbed run), and the median of the per-round
    ratios (each round runs raw and topo back to back, so the pair saw the same machine)."""
    paired = statistics.median(o / r for r, o in zip(raw, ours, strict=True))
    return [
        (label, f"{max(raw):,.0f}", f"{max(ours):,.0f}", f"{max(ours) / max(raw):.2f}x", target),
        (f"  median of {len(raw)} per-round ratios", "", "", f"{paired:.2f}x", ""),
    ]


def mode(concurrency: int | None) -> str:
    return "default" if concurrency is None else f"--concurrency {concurrency}"


def bench_kafka(events: int, rate: int, seconds: float, concurrency: int | None, threaded: int, rounds: int,
                sleepers: int) -> list[Row]:
    bootstrap = expand("${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = uuid.uuid4().hex[:6]
    with TemporaryDirectory() as temp:
        raw_topology = compile_into(f"bench-raw-{tag}", Path(temp) / "raw")
        topo_topology = compile_into(f"bench-topo-{tag}", Path(temp) / "topo")
        created = topics_of(raw_topology) + topics_of(topo_topology)
        for future in admin.create_topics(created, operation_timeout=30).values():
            future.result(60)
        try:
            raw = RawKafka(raw_topology, bootstrap)
            ours, ours_threaded = RuntimeBench(Path(temp) / "topo", concurrency), None
            raw.publish(200)  # warm-up: metadata and idempotent producer ids before the clock runs
            ours.publish(200)
            # Raw and runtime alternate, round by round, so noise from other processes on the
            # machine hits both sides alike.
            raw_pub: list[float] = []
            topo_pub: list[float] = []
            for _ in range(rounds):
                raw_pub.append(raw.publish(events))
                topo_pub.append(ours.publish(events))
            # A runtime round may settle a few hundred events past its count (the rest of the
            # batch in hand), so each round takes 90% of a round's events: the log never runs dry.
            per_round = events * 9 // 10
            raw_con: list[float] = []
            topo_con: list[float] = []
            for _ in range(rounds):
                raw_con.append(raw.consume(per_round))
                topo_con.append(ours.consume(per_round))
            rows = throughput_rows("kafka publish (events/s)", raw_pub, topo_pub, ">= 0.8x")
            rows += throughput_rows(f"kafka consume (events/s), {mode(concurrency)}", raw_con, topo_con,
                                    ">= 0.8x")
            if threaded:
                for _ in range(rounds):  # more events for the second runtime mode, published unmeasured
                    raw.publish(events)
                    ours.publish(events)
                ours_threaded = RuntimeBench(Path(temp) / "topo", threaded)
                raw_con, topo_con = [], []
                for _ in range(rounds):
                    raw_con.append(raw.consume(per_round))
                    topo_con.append(ours_threaded.consume(per_round))
                rows += throughput_rows(f"kafka consume (events/s), --concurrency {threaded}", raw_con, topo_con,
                                        "")
                ours_threaded.runtime.close()
            if sleepers:
                rows += sleeping_rows(Path(temp) / "topo", ours, sleepers, rounds, threaded or 8)
            raw_lat, topo_lat = raw.latency(rate, seconds), ours.latency(rate, seconds)
            ours.runtime.close()
        finally:
            for future in admin.delete_topics([t.topic for t in created], operation_timeout=30).values():
                future.result(60)
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        raw_value, topo_value = percentile(raw_lat, fraction) * 1000, percentile(topo_lat, fraction) * 1000
        rows.append((f"kafka latency {label} at {rate}/s (ms)", f"{raw_value:.1f}", f"{topo_value:.1f}",
                     f"{topo_value / raw_value:.2f}x", "< 50 ms" if label == "p99" else ""))
    mean = statistics.fmean(topo_lat) * 1000 if topo_lat else float("nan")
    rows.append(("kafka latency samples", str(len(raw_lat)), str(len(topo_lat)), "", f"topo mean {mean:.1f} ms"))
    return rows


def sleeping_rows(folder: Path, ours: RuntimeBench, count: int, rounds: int, threads: int) -> list[Row]:
    """A handler sleeping 2 ms: `--concurrency threads` (left column) against the default mode."""
    fixed = RuntimeBench(folder, threads)
    default_rates: list[float] = []
    fixed_rates: list[float] = []
    for _ in range(rounds):
        ours.publish(count * 2)  # both modes consume the same group's log, one after the other
        default_rates.append(ours.consume(count * 9 // 10, sleep=0.002))
        fixed_rates.append(fixed.consume(count * 9 // 10, sleep=0.002))
    fixed.runtime.close()
    return throughput_rows(f"kafka 2 ms handler (events/s): --concurrency {threads} | default", fixed_rates,
                           default_rates, ">= 0.8x")


def print_table(rows: list[Row]) -> None:
    """`rows[0]` is the header; columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5, help="throughput runs per side, alternating")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="fixed runtime worker threads (0: inline); default: topo run's adaptive default")
    parser.add_argument("--sleepers", type=int, default=4000,
                        help="events per round of the 2 ms handler comparison (default vs --threaded); 0: skip")
    parser.add_argument("--threaded", type=int, default=8,
                        help="also measure consuming with this many worker threads (topo run's default); 0: skip")
    options = parser.parse_args(argv)
    tune_garbage_collector()  # what `topo run` does; one process, so the raw side runs with it too
    rows: list[Row] = [("measure", "raw client", "topo runtime", "ratio", "target")]
    rows += bench_kafka(options.events, options.rate, options.seconds, options.concurrency, options.threaded,
                        options.rounds, options.sleepers)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
