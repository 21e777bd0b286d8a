"""Generation time for large topologies: 50, 100 and 200 event types x 50 chains.

    python bench/generate.py [--events 50 100 200] [--chains 50] [--groups 8] [--rounds 3] [--profile]

Each topology is synthesised as YAML (typed payloads of every field type, keys, ordering, retries,
groups subscribing to overlapping sets of events) and compiled exactly as `topo generate` does:
parse with positions, validate, resolve, run every emitter, write the output directory atomically.
The best of `--rounds` runs is kept per size. The target is 200 x 50 in under 3 s, with time per
event type roughly constant (linear growth). Exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from topo.generator.diagnostics import has_errors, render_all
from topo.generator.emit import EMITTERS, emit_all, emitter
from topo.generator.parse import parse
from topo.generator.pipeline import write
from topo.generator.resolve import resolve
from topo.generator.validate import validate

TARGET_SECONDS = 3.0
TARGET_EVENTS = 200
FIELD_KINDS: list[object] = [
    "address", "hash32", "uint256", "datetime", "boolean", "hex",
    {"type": "integer", "minimum": 0},
    {"type": "number", "minimum": 0, "maximum": 1_000_000},
    {"type": "string", "max_length": 64, "required": False},
    {"type": "enum", "values": ["pending", "done", "failed"]},
    {"type": "array", "items": "address", "required": False},
]
T = TypeVar("T")


def synthesise(events: int, chains: int, groups: int) -> dict[str, object]:
    """A topology of `events` event types on `chains` chains, consumed by `groups` groups."""
    names = [f"domain{i // 10}.event{i % 10}-v{i}" for i in range(events)]
    event_docs: dict[str, object] = {}
    for index, name in enumerate(names):
        payload = {f"field_{n}": FIELD_KINDS[(index + n) % len(FIELD_KINDS)] for n in range(8)}
        payload["account"] = "address"
        event_docs[name] = {
            "description": f"Synthetic event {index}.",
            "producers": [f"service-{index % 7}"],
            "key": "account" if index % 2 else "chain_id",
            "ordered": index % 3 == 0,
            "retention": "3d" if index % 4 == 0 else "7d",
            "payload": payload,
        }
    group_docs: dict[str, object] = {}
    for g in range(groups):
        subscribed = names[g::max(1, groups // 2)] or names[:1]
        group_docs[f"group-{g}"] = {
            "description": f"Synthetic group {g}.",
            "subscribes": subscribed,
            "delivery": "exactly_once" if g == 0 else "at_least_once",
            "retry": {"max_retries": 3 + g % 3, "initial": "500ms"},
        }
    return {
        "version": 1,
        "name": "bench",
        "broker": {"kind": "kafka", "kafka": {"partitions": 6, "replication_factor": 1}},
        "chains": {1000 + c: {"name": f"chain-{c}"} for c in range(chains)},
        "defaults": {"retry": {"max_retries": 3, "backoff": "exponential", "initial": "1s", "multiplier": 2}},
        "events": event_docs,
        "consumer_groups": group_docs,
        "alerts": {"consumer_lag": {"events": 1000, "seconds": 300}},
    }


def timed(phases: dict[str, float], name: str, action: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = action()
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
    return result


def run_once(path: Path, out: Path) -> tuple[dict[str, float], int, int]:
    """Seconds per phase, number of topics and of files for one full generation."""
    phases: dict[str, float] = {}
    document, diagnostics = timed(phases, "parse", lambda: parse(path))
    assert document is not None, render_all(diagnostics)
    diagnostics = timed(phases, "validate", lambda: validate(document, {}))
    if has_errors(diagnostics):
        raise SystemExit(render_all(diagnostics))
    topology = timed(phases, "resolve", lambda: resolve(document.data))
    files = timed(phases, "emit", lambda: emit_all(topology))
    timed(phases, "write", lambda: write(out, files))
    topics = sum(len(event.topics) for event in topology.events)
    return phases, topics, len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile the largest size and print hot spots")
    args = parser.parse_args()

    columns = ("events", "chains", "topics", "files", "parse", "validate", "resolve", "emit", "write", "total",
               "ms/event")
    print(" ".join(f"{c:>9}" for c in columns))
    verdict: float | None = None
    with tempfile.TemporaryDirectory(prefix="topo-bench-") as scratch:
        for events in args.events:
            path = Path(scratch, f"topology-{events}.yaml")
            path.write_text(yaml.safe_dump(synthesise(events, args.chains, args.groups), sort_keys=False))
            best: tuple[float, dict[str, float], int, int] | None = None
            for round_ in range(args.rounds):
                # Every round regenerates into a fresh directory: the full write path each time.
                phases, topics, files = run_once(path, Path(scratch, f"out-{events}-{round_}"))
                total = sum(phases.values())
                if best is None or total < best[0]:
                    best = (total, phases, topics, files)
            assert best is not None
            total, phases, topics, files = best
            row = [events, args.chains, topics, files, *(f"{phases[p]:.3f}" for p in columns[4:9]),
                   f"{total:.3f}", f"{1000 * total / events:.2f}"]
            print(" ".join(f"{v:>9}" for v in row), flush=True)
            if events == TARGET_EVENTS:
                verdict = total
        largest = max(args.events)
        document, _ = parse(Path(scratch, f"topology-{largest}.yaml"))
        assert document is not None
        topology = resolve(document.data)
        shares = []
        for name in EMITTERS:
            start = time.perf_counter()
            emitter(name)(topology)
            shares.append(f"{name} {time.perf_counter() - start:.3f}")
        print(f"emit by emitter at {largest} event types (s): {', '.join(shares)}")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run_once(Path(scratch, f"topology-{largest}.yaml"), Path(scratch, "out-profile"))
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
    if verdict is not None:
        ok = verdict < TARGET_SECONDS
        print(f"target: {TARGET_EVENTS} event types x {args.chains} chains under {TARGET_SECONDS:.0f} s: "
              f"{verdict:.2f} s, {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
