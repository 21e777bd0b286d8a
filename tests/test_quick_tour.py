"""README.md's quick tour, run as written.

The shell commands of the fenced blocks that follow a `<!-- quick-tour` marker are run in order,
against the real Kafka, in a temporary copy of what they need (topology.yaml and examples/). The
copy is renamed to this test's unique name, with topics that carry it, so the tour shares nothing
with other tests or with a topology applied by hand. `topo run` is long-running: it is started in
the background and stopped with SIGTERM once the handler's line for the published event appeared.
Then every other group of the reference topology is started the same way (`topo run -t topology.yaml
--group G`), one event of each type is published, and each group's example handler
(examples/explorer_handlers.py) must log the id of every event it subscribes to.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kafka_cleanup import delete_topology_leftovers
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
MARKER = "<!-- quick-tour"
TOPO = Path(sys.executable).with_name("topo")  # the virtualenv's `topo`, as `. .venv/bin/activate` gives it
COMMAND_TIMEOUT = 180.0
HANDLED_TIMEOUT = 120.0
# One valid payload per event type of the reference topology (token.transfer: the README's own).
SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "block.new": {"block_number": 7, "hash": "0x" + "ab" * 32, "parent_hash": "0x" + "cd" * 32,
                  "timestamp": "2026-01-01T00:00:00Z", "transaction_count": 1},
    "transaction.confirmed": {"hash": "0x" + "12" * 32, "block_number": 7, "status": "success",
                              "from_address": "0x" + "11" * 20, "to_address": "0x" + "22" * 20},
    "transaction.pending": {"hash": "0x" + "34" * 32, "from_address": "0x" + "11" * 20, "nonce": 0, "value": "5",
                            "gas": 21000, "max_fee_per_gas": "30000000000", "first_seen": "2026-01-01T00:00:00Z"},
    "contract.verified": {"address": "0x" + "33" * 20, "verification_status": "verified",
                          "verified_at": "2026-01-01T00:00:00Z"},
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def tour_commands(text: str) -> list[list[str]]:
    """The commands of every fenced block right after a quick-tour marker, comments removed."""
    lines = text.splitlines()
    commands: list[list[str]] = []
    for index, line in enumerate(lines):
        if not line.startswith(MARKER):
            continue
        fence = index + 1
        assert lines[fence].startswith("```"), f"README.md:{index + 1}: a quick-tour marker must precede a fence"
        for body in lines[fence + 1:]:
            if body.startswith("```"):
                break
            words = shlex.split(body, comments=True)
            if words:
                commands.append(words)
    return commands


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_tour_walks_validate_generate_apply_run_publish() -> None:
    commands = tour_commands(README.read_text())
    verbs = [words[1] for words in commands if words[0] == "topo"]
    assert verbs == ["validate", "generate", "apply", "run", "publish"], commands
    assert all(words[0] == "topo" for words in commands), "the tour runs topo commands only"


def test_the_handler_shown_is_the_one_in_examples() -> None:
    source = (REPO_ROOT / "examples" / "explorer_handlers.py").read_text()
    shown = python_blocks(README.read_text())
    assert shown, "README.md shows the handler"
    assert all(block in source for block in shown), "README's handler differs from examples/explorer_handlers.py"


def isolated_copy(folder: Path, name: str) -> None:
    """topology.yaml and examples/ under `folder`, the topology renamed so that every topic, group
    and exchange name is this test's own."""
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "topology.yaml").read_text())
    document["name"] = name
    document["broker"]["rabbitmq"]["exchange"] = f"{name}.events"
    document["naming"] = {"topic": "{topology}.{event_type}.{chain_id}"}
    (folder / "topology.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    shutil.copytree(REPO_ROOT / "examples", folder / "examples", ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture
def tour_folder(tmp_path: Path, unique_name: str, kafka_admin: Any) -> Iterator[Path]:
    """The isolated copy; the test's topics and consumer groups are deleted afterwards."""
    isolated_copy(tmp_path, unique_name)
    yield tmp_path
    delete_topology_leftovers(kafka_admin, unique_name)


def executable(words: list[str]) -> list[str]:
    return [str(TOPO), *words[1:]] if words[0] == "topo" else words


def run_to_completion(words: list[str], folder: Path, environment: dict[str, str]) -> str:
    completed = subprocess.run(executable(words), cwd=folder, env=environment, capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT, check=False)
    assert completed.returncode == 0, (f"`{shlex.join(words)}` exited {completed.returncode}\n"
                                       f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}")
    return completed.stdout


def test_the_quick_tour_runs_as_written(tour_folder: Path, kafka_bootstrap: str) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TOPO_")}
    environment |= {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPO_STATE_DIR": str(tour_folder / "state"),
                    "PYTHONUNBUFFERED": "1"}
    handler_output = tour_folder / "run.out"
    handler_errors = tour_folder / "run.err"
    consumer: subprocess.Popen[bytes] | None = None
    published: list[str] = []
    expected: list[str] = []
    try:
        for words in tour_commands(README.read_text()):
            if words[:2] == ["topo", "run"]:
                assert consumer is None, "the tour starts one consumer"
                with handler_output.open("wb") as out, handler_errors.open("wb") as err:
                    consumer = subprocess.Popen(executable(words), cwd=tour_folder, env=environment,
                                                stdout=out, stderr=err)
                continue
            output = run_to_completion(words, tour_folder, environment)
            if words[:2] == ["topo", "publish"]:
                found = UUID.search(output)
                assert found, f"`topo publish` printed no event id: {output!r}"
                published.append(found.group(0))
                transfer = json.loads(words[words.index("--payload") + 1])
                expected.append(f"notify {transfer['to_address']}: {transfer['amount']} of token "
                                f"{transfer['token_address']} on chain {words[words.index('--chain') + 1]} "
                                f"(event {found.group(0)})")
        assert consumer is not None and published, "the tour runs a consumer and publishes an event"

        def handled() -> bool:
            assert consumer is not None
            if consumer.poll() is not None:
                pytest.fail(f"`topo run` exited {consumer.returncode} before handling the event:\n"
                            f"{handler_errors.read_text()}", pytrace=False)
            return all(line in handler_output.read_text().splitlines() for line in expected)

        wait_until(handled, HANDLED_TIMEOUT, lambda: f"the handler's lines {expected} in `topo run`'s output "
                                                     f"(stderr so far: {handler_errors.read_text()[-2000:]!r})")

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, f"`topo run` did not drain cleanly:\n{handler_errors.read_text()}"
        every_group_handles_its_events(tour_folder, environment, next(w for w in tour_commands(README.read_text())
                                                                      if w[:2] == ["topo", "run"]))
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=30)


def every_group_handles_its_events(folder: Path, environment: dict[str, str], tour_run: list[str]) -> None:
    """Every group of the reference topology, started as the tour starts notifications, logs the id of
    each event of its subscriptions: its example handler is the one topology.yaml names."""
    document: dict[str, Any] = yaml.safe_load((folder / "topology.yaml").read_text())
    groups = {name: group["subscribes"] for name, group in document["consumer_groups"].items()}
    assert all("handler" in group for group in document["consumer_groups"].values()), "every group names a handler"
    tour_payloads = {words[2]: json.loads(words[words.index("--payload") + 1])
                     for words in tour_commands(README.read_text()) if words[:2] == ["topo", "publish"]}
    payloads = SAMPLE_PAYLOADS | tour_payloads
    assert set(payloads) == set(document["events"]), "a sample payload for every event type"
    consumers: dict[str, subprocess.Popen[bytes]] = {}
    outputs = {name: folder / f"run-{name}.out" for name in groups}
    try:
        for name in groups:
            words = [*tour_run[:tour_run.index("--group") + 1], name]
            with outputs[name].open("wb") as out:
                consumers[name] = subprocess.Popen(executable(words), cwd=folder, env=environment, stdout=out,
                                                   stderr=subprocess.STDOUT)
        publishers = {event: subprocess.Popen(
            [str(TOPO), "publish", event, "-t", "topology.yaml", "--chain", "138", "--payload", json.dumps(payload)],
            cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for event, payload in payloads.items()}
        event_ids: dict[str, str] = {}
        for event, publisher in publishers.items():
            out, err = publisher.communicate(timeout=COMMAND_TIMEOUT)
            assert publisher.returncode == 0, f"`topo publish {event}` exited {publisher.returncode}: {err}"
            event_ids[event] = json.loads(out)["event_id"]
        expected = {name: [event_ids[event] for event in subscribed] for name, subscribed in groups.items()}

        def missing() -> dict[str, list[str]]:
            for name, consumer in consumers.items():
                if consumer.poll() is not None:
                    pytest.fail(f"`topo run --group {name}` exited {consumer.returncode}:\n"
                                f"{outputs[name].read_text()[-3000:]}", pytrace=False)
            return {name: [i for i in ids if i not in outputs[name].read_text()] for name, ids in expected.items()}

        wait_until(lambda: not any(missing().values()), HANDLED_TIMEOUT,
                   lambda: f"each group's handler to log its events; still missing: {missing()}")
        for consumer in consumers.values():
            consumer.send_signal(signal.SIGTERM)
        for name, consumer in consumers.items():
            assert consumer.wait(timeout=60) == 0, f"{name} did not drain cleanly:\n{outputs[name].read_text()}"
    finally:
        for consumer in consumers.values():
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait(timeout=30)
