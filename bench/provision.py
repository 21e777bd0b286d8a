"""Provisioning at scale: `topo apply` of ~2,000 Kafka topics from scratch, then `topo plan` against
the up-to-date broker. Targets: apply < 30 s, plan < 3 s.

    python bench/provision.py [--events 45] [--chains 40] [--groups 50] [--partitions 1]

The topology is synthetic (events x chains event topics, plus a retry topic per delay and a
dead-letter topic per group) and named `bench-<random>`, so it never touches anyone's topics; every
topic it creates is deleted at the end. Needs the Kafka broker of `make brokers-up`
(KAFKA_BOOTSTRAP_SERVERS overrides).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from topo.generator.resolve import resolve
from topo.provision.engine import Provisioner
from topo.provision.plan import Broker

T = TypeVar("T")
APPLY_TARGET = 30.0
PLAN_TARGET = 3.0


def synthetic(name: str, events: int, chains: int, groups: int, partitions: int) -> dict[str, Any]:
    event_names = [f"event{index:03d}.happened" for index in range(events)]
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": "kafka", "kafka": {"partitions": partitions}},
        "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "chains": {chain: {"name": f"chain{chain}"} for chain in range(1, chains + 1)},
        "defaults": {"retention": "3d"},
        "events": {event: {"key": "chain_id", "payload": {"value": "integer"}} for event in event_names},
        "consumer_groups": {
            f"group{index:03d}": {"subscribes": [event_names[(index + k) % events] for k in range(3)]}
            for index in range(groups)
        },
    }


def timed(function: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=45)
    parser.add_argument("--chains", type=int, default=40)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()

    name = f"bench-{uuid.uuid4().hex[:8]}"
    topology = resolve(synthetic(name, args.events, args.chains, args.groups, args.partitions))
    provisioner = Provisioner(topology, (Broker.KAFKA,))
    topics = len(provisioner.desired.topics)
    rows: list[tuple[str, float, str]] = []
    status = 0
    try:
        plan, plan_empty = timed(provisioner.plan)
        rows.append(("plan, empty broker", plan_empty, f"{len(plan.actionable)} to create"))
        _, apply_seconds = timed(lambda: provisioner.apply(plan, lambda line: None))
        rows.append(("apply (create topics)", apply_seconds, ""))
        rows.append(("topo apply from scratch", plan_empty + apply_seconds, f"target < {APPLY_TARGET:.0f} s"))
        durations = []
        for _ in range(3):
            again, seconds = timed(provisioner.plan)
            durations.append(seconds)
            if again.actionable or again.impossible:
                print(f"error: plan after apply is not empty: {again.summary()}", file=sys.stderr)
                status = 1
        plan_seconds = statistics.median(durations)
        rows.append(("plan, up to date (median of 3)", plan_seconds, f"target < {PLAN_TARGET:.0f} s"))
        if plan_empty + apply_seconds >= APPLY_TARGET or plan_seconds >= PLAN_TARGET:
            status = 1
    finally:
        created = [t.name for t in provisioner.desired.topics]
        _, cleanup = timed(lambda: _delete(provisioner, created))
        rows.append(("clean-up (delete topics)", cleanup, ""))

    print(f"topology {name}: {topics} topics ({args.events} events x {args.chains} chains + "
          f"{args.groups} groups' retry/dead-letter topics), {args.partitions} partition(s) each")
    print(f"{'step':<34}{'seconds':>10}  note")
    for step, seconds, note in rows:
        print(f"{step:<34}{seconds:>10.2f}  {note}")
    return status


def _delete(provisioner: Provisioner, names: list[str]) -> None:
    existing = set(provisioner.kafka.partitions())
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in provisioner.kafka.admin.delete_topics(doomed, operation_timeout=120).values():
            future.result(timeout=180)


if __name__ == "__main__":
    sys.exit(main())
