"""`make demo` (examples/demo.py) on the real Kafka: events flow through every group, the fee-oracle's
poison input is retried and dead-lettered, and Ctrl-C (SIGINT, sent by the test) stops it cleanly.

The demo runs on an isolated copy of the reference topology (its own topics and groups), without a
terminal, so it prints one status line per group every 2 s instead of the live table; the table
itself is rendered from the same rows in memory below.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from examples.dashboard import Dashboard, LastLines
from tests.support.kafka_cleanup import delete_topology_leftovers
from tests.support.waiting import wait_until
from tests.test_quick_tour import REPO_ROOT, TOPO, isolated_copy
from topo.generator.load import load_topology
from topo.runtime.metrics import RuntimeMetrics

SETUP_TIMEOUT = 120.0
FLOWING_TIMEOUT = 60.0  # the first poison input is published after 2 s and dead-lettered ~7 s later
STOP_TIMEOUT = 40.0
STATUS = re.compile(r"^demo: (?P<group>\S+) handled=(?P<handled>\d+) .* retries=(?P<retries>\d+) "
                    r"dead_letters=(?P<dead>\d+)", re.MULTILINE)


@pytest.fixture
def demo_folder(tmp_path: Path, unique_name: str, kafka_bootstrap: str, kafka_admin: Any) -> Iterator[Path]:
    isolated_copy(tmp_path, unique_name)
    for words in (["generate", "-t", "topology.yaml", "-o", "generated"], ["apply", "-t", "topology.yaml", "--yes"]):
        subprocess.run([str(TOPO), *words], cwd=tmp_path, env=environment(tmp_path, kafka_bootstrap), check=True,
                       capture_output=True, timeout=SETUP_TIMEOUT)
    yield tmp_path
    delete_topology_leftovers(kafka_admin, unique_name)


def environment(folder: Path, kafka_bootstrap: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_")}
    return inherited | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPO_STATE_DIR": str(folder / "state"),
                        "PYTHONUNBUFFERED": "1"}


def latest_status(text: str) -> dict[str, dict[str, int]]:
    """Each group's most recent status line: handled, retries, dead letters."""
    return {m["group"]: {k: int(m[k]) for k in ("handled", "retries", "dead")} for m in STATUS.finditer(text)}


def test_the_demo_shows_events_retries_and_a_dead_letter_then_stops_on_ctrl_c(demo_folder: Path,
                                                                               kafka_bootstrap: str) -> None:
    groups = list(yaml.safe_load((demo_folder / "topology.yaml").read_text())["consumer_groups"])
    output, errors = demo_folder / "demo.out", demo_folder / "demo.err"
    with output.open("wb") as out, errors.open("wb") as err:
        demo = subprocess.Popen([sys.executable, "-m", "examples.demo", "-t", "topology.yaml", "--rate", "30"],
                                cwd=demo_folder, env=environment(demo_folder, kafka_bootstrap), stdout=out, stderr=err)
    try:
        def shown() -> bool:
            if demo.poll() is not None:
                pytest.fail(f"the demo exited {demo.returncode}:\n{errors.read_text()[-3000:]}", pytrace=False)
            status = latest_status(output.read_text())
            return (set(status) == set(groups) and all(row["handled"] > 0 for row in status.values())
                    and status["fee-oracle"]["retries"] >= 1 and status["fee-oracle"]["dead"] >= 1)

        wait_until(shown, FLOWING_TIMEOUT, lambda: f"every group handling events and a fee-oracle retry and dead "
                                                   f"letter; last status: {latest_status(output.read_text())}")
        assert "carries no fee" in errors.read_text(), "the failed attempts are logged with the handler's error"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=STOP_TIMEOUT) == 0, f"not a clean stop:\n{errors.read_text()[-3000:]}"
        assert output.read_text().rstrip().endswith("demo: stopped cleanly")
        assert "Traceback" not in errors.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)


def test_the_live_table_shows_every_group_with_its_counts() -> None:
    topology = load_topology(REPO_ROOT / "topology.yaml")
    metrics = RuntimeMetrics(topology)
    last = LastLines()
    last.emit(logging.LogRecord("examples.fee-oracle", logging.INFO, __file__, 1, "median fee %s gwei", ("31.50",),
                                None))
    metrics.consumed.labels("analytics", "block.new", "138").inc(12)
    metrics.retried.labels("fee-oracle", "transaction.pending", "1").inc(3)
    metrics.dead_lettered.labels("fee-oracle", "transaction.pending", "1", "max_retries").inc()
    dashboard = Dashboard("explorer on kafka", [g.name for g in topology.groups], metrics, last)
    console = Console(record=True, width=200)
    console.print(dashboard.table())
    text = console.export_text()
    cells = {row[0]: row for row in ([cell.strip() for cell in line.split("│")[1:-1]]
                                      for line in text.splitlines() if line.startswith("│"))}
    assert set(cells) == {g.name for g in topology.groups}
    # group, handled, per s, lag, retries, dead letters, in DLQ, last line
    assert cells["analytics"][1] == "12"
    assert cells["fee-oracle"][4:6] == ["3", "1"]
    assert cells["fee-oracle"][7] == "median fee 31.50 gwei"
    assert cells["notifications"][1:6] == ["0", "0.0", "?", "0", "0"]
