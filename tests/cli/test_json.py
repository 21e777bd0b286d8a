"""`--json` of every data-printing command, against the real Kafka broker, from a topology.yaml
(runtime commands use generated/ beside it) and from a compiled copy elsewhere (`-t dir/custom.json`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import generated, small_doc, topo, write_yaml
from topo.cli.options import ENV_TOPOLOGY
from topo.generator.load import load_topology
from topo.runtime.app import Runtime

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, kafka_admin: Any,
            unique_name: str) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_TOPOLOGY, raising=False)
    monkeypatch.delenv("TOPO_BROKER", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    yield tmp_path
    ours = [name for name in kafka_admin.list_topics(timeout=30).topics if name.startswith(f"{unique_name}.")]
    if ours:
        for future in kafka_admin.delete_topics(ours, operation_timeout=30).values():
            future.result(timeout=60)


def as_json(*arguments: str | Path, code: int = 0) -> Any:
    result = topo(*arguments, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_plan_apply_publish_dlq_and_lag_print_json(workdir: Path, unique_name: str) -> None:
    source = write_yaml(workdir / "topology.yaml", small_doc(unique_name))
    plan = as_json("plan", code=2)
    assert plan["format"] == "topo-plan/1" and plan["summary"]["create"] > 0

    applied = as_json("apply", "-t", source, "--yes")
    assert applied["status"] == "applied" and applied["error"] is None
    assert applied["plan"]["changes"] == plan["changes"]
    assert len(applied["applied"]) >= len([c for c in plan["changes"] if c["action"] == "create"])
    assert as_json("apply", "--yes")["status"] == "no-changes"

    out = generated(source, workdir / "generated")
    sent = as_json("publish", "token.transfer", "--payload", '{"chain_id": 1, "token": "bad"}')
    topic = f"{unique_name}.token.transfer.1"
    assert sent["topic"] == topic == sent["destination"] and sent["key"] == "bad"
    assert isinstance(sent["partition"], int) and isinstance(sent["offset"], int) and sent["offset"] >= 0
    assert sent["event_type"] == "token.transfer" and sent["chain_id"] == 1

    runtime = Runtime.from_topology(load_topology(source), out, broker="kafka")
    try:
        def fail(event: Any) -> None:
            raise RuntimeError("downstream is down")

        runtime.register("indexer", fail)
        runner = runtime.runner("indexer")
        runner.run(until=lambda: runner.handled >= 1 and runner.in_flight == 0, timeout=60)
    finally:
        runtime.close()

    elsewhere = workdir / "some" / "dir"
    shutil.copytree(out / "python", elsewhere / "python")
    shutil.copy(out / "topology.json", elsewhere / "custom.json")
    # Another process: this one has imported the generated module from generated/ already.
    done = subprocess.run([sys.executable, "-m", "topo", "dlq", "list", "-t", str(elsewhere / "custom.json"),
                           "--group", "indexer", "--timeout", "20", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed["group"] == "indexer" and listed["count"] == 1 and listed["replayed_count"] == 0
    [letter] = listed["dead_letters"]
    assert letter["event"]["event_id"] == sent["event_id"]
    assert letter["headers"]["x-topo-error-message"] == "downstream is down"
    assert letter["replayed"] is False and letter["replayed_at"] is None

    # --all-groups: back to the original topic (every subscribed group; tests/runtime/test_replay.py: one group).
    replayed = as_json("dlq", "replay", "--group", "indexer", "--timeout", "20", "--all-groups")
    assert replayed["replayed"] == 1 and replayed["dry_run"] is False
    assert [(e["event_id"], e["to"], e["topic"]) for e in replayed["events"]] == [(sent["event_id"], topic, topic)]
    assert as_json("dlq", "replay", "--group", "indexer", "--timeout", "5")["replayed"] == 0

    # Replayed letters are hidden by default, as `topo lag` no longer counts them; --all marks them.
    pending = topo("dlq", "list", "--group", "indexer", "--timeout", "5", "--json")
    assert pending.exit_code == 0, pending.output
    assert json.loads(pending.stdout)["dead_letters"] == [] and json.loads(pending.stdout)["replayed_count"] == 1
    assert pending.stderr.strip() == "no dead letters for group indexer (1 replayed; --all to show them)"
    assert [g["dead_letters"] for g in as_json("lag", "--group", "indexer")["groups"]] == [0]
    everything = as_json("dlq", "list", "--group", "indexer", "--timeout", "20", "--all")
    [marked] = everything["dead_letters"]
    assert marked["event"]["event_id"] == sent["event_id"] and marked["replayed"] is True
    tailed = topo("tail", "token.transfer", "--from-beginning", "--limit", "2", "--timeout", "30")
    [copy] = [e for e in map(json.loads, tailed.stdout.splitlines()) if "x-topo-replayed-at" in e.get("headers", {})]
    assert marked["replayed_at"] == copy["headers"]["x-topo-replayed-at"]

    lag = as_json("lag", "--group", "websocket")
    assert [group["group"] for group in lag["groups"]] == ["websocket"]
