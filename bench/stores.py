"""Processed stores under the runtime versus the raw client loop, in one run on the same Kafka.

    python bench/stores.py [--events 30000] [--rounds 3] [--concurrency 0]

One topic, read by a raw consumer loop (`consume` batches, `json.loads`, asynchronous commit per
batch; raw = 1.0) and by `topo` consumer groups with a no-op handler that differ only in their
`dedup` store and delivery: memory, SQLite (a file in a temporary folder), PostgreSQL
(`DATABASE_URL`, default the `make brokers-up` server; a table of its own, dropped at the end),
and `exactly_once` (Kafka transactions) with memory and with PostgreSQL. The durable stores
group-commit: one store transaction per batch (topo.runtime.group_commit). Each round runs raw
and every group back to back over `--events` events; the table gives the best round of each
side and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from confluent_kafka.admin import AdminClient

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.runtime import RawKafka, Row, RuntimeBench, print_table, topics_of, topology_doc
from topo.core.interpolate import expand
from topo.core.model import Topology
from topo.generator.emit import emit_all
from topo.generator.resolve import resolve
from topo.runtime.process import tune_garbage_collector

DEFAULT_DSN = "${DATABASE_URL:-postgresql://topo:topo@127.0.0.1:5432/topo}"
# (group, label, dedup settings, delivery, target ratio)
CONFIGS = (
    ("store-memory", "memory store", {"store": "memory"}, "at_least_once", ""),
    ("store-sqlite", "SQLite store", {"store": "sqlite"}, "at_least_once", ">= 0.5x"),
    ("store-postgres", "PostgreSQL store", {"store": "postgres"}, "at_least_once", ">= 0.35x"),
    ("eo-memory", "exactly_once + memory store", {"store": "memory"}, "exactly_once", ""),
    ("eo-postgres", "exactly_once + PostgreSQL store", {"store": "postgres"}, "exactly_once", ">= 0.3x"),
)


def compile_stores(name: str, folder: Path, table: str) -> Topology:
    doc = topology_doc(name)
    bench_group = doc["consumer_groups"].pop("bench")
    for group, _, dedup, delivery, _ in CONFIGS:
        settings: dict[str, Any] = dict(dedup)
        if settings["store"] == "sqlite":
            settings["path"] = str(folder / f"{group}.sqlite")
        elif settings["store"] == "postgres":
            settings.update(dsn=DEFAULT_DSN, table=f"{table}_{group.replace('-', '_')}")
        doc["consumer_groups"][group] = {**bench_group, "dedup": settings, "delivery": delivery}
    topology = resolve(doc)
    for relative, text in emit_all(topology).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return topology


class GroupBench(RuntimeBench):
    """`RuntimeBench.consume` with the group chosen (each group resumes where its last round ended)."""

    def __init__(self, folder: Path, concurrency: int, group: str) -> None:
        super().__init__(folder, concurrency)
        self.group = group

    def _run(self, handler: Callable[[Any], None], done: Callable[[], bool], timeout: float
             ) -> Callable[[float], None]:
        self.runtime.registry = type(self.runtime.registry)()
        self.runtime.register(self.group, handler)
        runner = self.runner = self.runtime.runner(self.group, concurrency=self.concurrency)
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


def drop_tables(table: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(expand(DEFAULT_DSN), autocommit=True) as connection:
        for group, _, dedup, _, _ in CONFIGS:
            if dedup["store"] == "postgres":
                name = f"{table}_{group.replace('-', '_')}"
                connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def bench_stores(events: int, rounds: int, concurrency: int) -> list[Row]:
    bootstrap = expand("${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = uuid.uuid4().hex[:6]
    table = f"bench_{tag}"
    rows: list[Row] = []
    with TemporaryDirectory() as temp:
        topology = compile_stores(f"bench-stores-{tag}", Path(temp), table)
        created = topics_of(topology)
        for future in admin.create_topics(created, operation_timeout=30).values():
            future.result(60)
        sides: list[GroupBench] = []
        try:
            raw = RawKafka(topology, bootstrap)
            sides = [GroupBench(Path(temp), concurrency, group) for group, *_ in CONFIGS]
            for _ in range(rounds):  # every group reads each event once: one round's worth per round
                sides[0].publish(events)
            raw_rates: list[float] = []
            ours: dict[str, list[float]] = {group: [] for group, *_ in CONFIGS}
            # A runtime round may settle a few hundred events past its count (the rest of the batch
            # in hand), so each round takes 90% of a round's events: the log never runs dry.
            per_round = events * 9 // 10
            for _ in range(rounds):  # back to back per round: noise from other work hits every side alike
                raw_rates.append(raw.consume(per_round))
                for side in sides:
                    ours[side.group].append(side.consume(per_round))
            best_raw = max(raw_rates)
            rows.append(("raw consumer loop (events/s)", f"{best_raw:,.0f}", "", "1.00x", ""))
            for group, label, _, _, target in CONFIGS:
                rates = ours[group]
                paired = statistics.median(o / r for r, o in zip(raw_rates, rates, strict=True))
                rows.append((f"kafka consume, {label}", f"{best_raw:,.0f}", f"{max(rates):,.0f}",
                             f"{max(rates) / best_raw:.2f}x", target))
                rows.append((f"  median of {rounds} per-round ratios", "", "", f"{paired:.2f}x", ""))
        finally:
            for side in sides:
                side.runtime.close()
            for future in admin.delete_topics([t.topic for t in created], operation_timeout=30).values():
                future.result(60)
            drop_tables(table)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=0,
                        help="runtime worker threads; 0: handlers on the consume thread, as in the raw loop")
    options = parser.parse_args(argv)
    tune_garbage_collector()
    rows: list[Row] = [("measure (no-op handler)", "raw client", "topo runtime", "ratio", "target")]
    rows += bench_stores(options.events, options.rounds, options.concurrency)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
