"""Test topologies, compilation, provisioning and process helpers for tests/observe (no pytest here)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.waiting import wait_until
from topo.core.model import Topology
from topo.generator.emit import emit_all
from topo.generator.resolve import resolve

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOPO = [sys.executable, "-m", "topo"]
EVENT = "item.added"
GROUP = "watcher"


def document(name: str, broker: str = "kafka", *, lag_events: int = 1000, lag_for: str = "1s",
             failure_window: str = "15s", stalled_for: str = "30s", partitions: int = 3) -> dict[str, Any]:
    """One chain, one unordered event, one group whose handler fails events with note="poison".

    No retries, so a failing event is dead-lettered at once; short `for:` windows so alerts fire
    within seconds. Every broker object's name starts with `name`."""
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": broker, "kafka": {"partitions": partitions, "replication_factor": 1},
                   "rabbitmq": {"exchange": f"{name}.events", "partitions": 2}},
        "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "chains": {1: {"name": "ethereum"}},
        "defaults": {"retry": {"max_retries": 0}},
        "events": {EVENT: {"producers": ["feeder"], "key": "item", "ordered": False,
                           "payload": {"item": "string", "seq": {"type": "integer", "minimum": 0},
                                       "note": {"type": "string", "required": False}}}},
        "consumer_groups": {GROUP: {"subscribes": [EVENT], "handler": "obs_handlers:handle"}},
        "alerts": {"consumer_lag": {"events": lag_events, "seconds": "1h", "for": lag_for},
                   "dead_letter": {"events": 0},
                   "error_rate": {"ratio": 0.5, "for": failure_window},
                   "stalled": {"for": stalled_for}},
    }


def compile_topology(doc: Mapping[str, Any], out: Path) -> Topology:
    topology = resolve(doc)
    for relative, text in emit_all(topology).items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return topology


def write_all(files: Mapping[str, str], out: Path) -> None:
    for relative, text in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def topo(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOPO, *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """`wait_until` for services that may not answer yet: connection errors count as "not yet"."""
    return wait_until(predicate, timeout, what, interval=interval, ignore=(requests.RequestException, OSError))


@dataclass
class Process:
    """A `topo` subprocess this test started; `stop()` ends exactly it."""

    popen: subprocess.Popen[str]
    log: Path

    @classmethod
    def start(cls, args: list[str], env: Mapping[str, str], log: Path) -> Process:
        handle = log.open("w")
        popen = subprocess.Popen([*TOPO, *args], env=dict(env), stdout=handle, stderr=subprocess.STDOUT,
                                 text=True, cwd=REPO)
        return cls(popen, log)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited with {self.popen.returncode}:\n{self.output()}")
            return re.search(pattern, self.output())

        match: re.Match[str] = wait_for(found, timeout, f"{pattern!r} in {self.log}")
        return match

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def scrape(url: str) -> dict[str, float]:
    """Sample name{labels} -> value of a /metrics page (names only, for existence checks)."""
    text = requests.get(url, timeout=10).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        samples[series] = float(value)
    return samples


def metric_names(samples: Mapping[str, float]) -> set[str]:
    return {series.split("{", 1)[0] for series in samples}


def total(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    result = 0.0
    for series, value in samples.items():
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        if all(f'{key}="{val}"' in rest for key, val in labels.items()):
            result += value
    return result


PROMQL_NAME = re.compile(r"\b((?:topo|kafka)_[a-zA-Z0-9_]+)")


def names_in_expr(expr: str) -> set[str]:
    """Metric names of the topo exporters used in a PromQL expression."""
    return set(PROMQL_NAME.findall(expr))


SERIES_SELECTOR = re.compile(r"\b((?:topo|kafka)_[a-zA-Z0-9_]+)(\{[^}]*\})?")


def unfiltered_selectors(expr: str, topology: str) -> list[str]:
    """Selectors of topo series in `expr` that do not filter on `topology="<topology>"`."""
    wanted = f'topology="{topology}"'
    return [match.group(0) for match in SERIES_SELECTOR.finditer(expr) if wanted not in (match.group(2) or "")]
