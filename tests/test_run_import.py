"""`topo run --import MODULE` runs handlers MODULE registers with the documented `@app.handler(group,
event)` on its own Runtime, found in the current folder without PYTHONPATH, on the real Kafka.

The topology is an isolated copy of the reference one whose fee-oracle names no handler: without
`--import` the group has none, with it the module's registration is what handles the event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kafka_cleanup import delete_topology_leftovers
from tests.support.waiting import wait_until
from tests.test_quick_tour import SAMPLE_PAYLOADS, TOPO, isolated_copy

TIMEOUT = 120.0
MODULE = '''\
"""A service's handlers, registered in Python (docs/runtime.md)."""
from topo.runtime.app import Runtime

app = Runtime.from_generated("generated")


@app.handler("fee-oracle", "transaction.pending")
def on_pending(event):
    print(f"registered handler: {event.payload.hash} (event {event.event_id})", flush=True)
'''


@pytest.fixture
def folder(tmp_path: Path, unique_name: str, kafka_bootstrap: str, kafka_admin: Any) -> Iterator[Path]:
    """The isolated copy without fee-oracle's handler, generated and applied, with the module beside it."""
    isolated_copy(tmp_path, unique_name)
    document = yaml.safe_load((tmp_path / "topology.yaml").read_text())
    del document["consumer_groups"]["fee-oracle"]["handler"]
    (tmp_path / "topology.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    (tmp_path / "registered_handlers.py").write_text(MODULE)
    for words in (["generate", "-t", "topology.yaml", "-o", "generated"], ["apply", "-t", "topology.yaml", "--yes"]):
        subprocess.run([str(TOPO), *words], cwd=tmp_path, env=environment(tmp_path, kafka_bootstrap), check=True,
                       capture_output=True, timeout=TIMEOUT)
    yield tmp_path
    delete_topology_leftovers(kafka_admin, unique_name)


def environment(folder: Path, kafka_bootstrap: str) -> dict[str, str]:
    """No PYTHONPATH: the module is found because `topo run` puts the current folder on sys.path."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOPO_") and k != "PYTHONPATH"}
    return inherited | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPO_STATE_DIR": str(folder / "state"),
                        "PYTHONUNBUFFERED": "1"}


def test_without_import_the_group_has_no_handler(folder: Path, kafka_bootstrap: str) -> None:
    completed = subprocess.run([str(TOPO), "run", "-t", "topology.yaml", "--group", "fee-oracle"], cwd=folder,
                               env=environment(folder, kafka_bootstrap), capture_output=True, text=True,
                               timeout=TIMEOUT, check=False)
    assert completed.returncode != 0
    assert "has no handler for transaction.pending" in completed.stderr, completed.stderr


def test_import_runs_the_handlers_a_module_registered_on_its_own_runtime(folder: Path, kafka_bootstrap: str
                                                                          ) -> None:
    env = environment(folder, kafka_bootstrap)
    output = folder / "run.out"
    with output.open("wb") as out:
        consumer = subprocess.Popen([str(TOPO), "run", "-t", "topology.yaml", "--group", "fee-oracle",
                                     "--import", "registered_handlers"], cwd=folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
    try:
        payload = SAMPLE_PAYLOADS["transaction.pending"]
        published = subprocess.run([str(TOPO), "publish", "transaction.pending", "-t", "topology.yaml", "--chain",
                                    "138", "--payload", json.dumps(payload)], cwd=folder, env=env,
                                   capture_output=True, text=True, timeout=TIMEOUT, check=True)
        expected = f"registered handler: {payload['hash']} (event {json.loads(published.stdout)['event_id']})"

        def handled() -> bool:
            if consumer.poll() is not None:
                pytest.fail(f"`topo run --import` exited {consumer.returncode}:\n{output.read_text()}", pytrace=False)
            return expected in output.read_text().splitlines()

        wait_until(handled, TIMEOUT, lambda: f"{expected!r} in topo run's output:\n{output.read_text()[-2000:]}")
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, output.read_text()
        assert "no handler registered" not in output.read_text()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=30)
