"""The generated kafka/topics.sh, rabbitmq/definitions.json and rabbitmq/provision.sh, run against
clean brokers, give the same broker state as `topo apply`."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.provision.helpers import Cli, kafka_state, rabbit_state, small_doc, write
from topo.generator.emit import kafka as kafka_emitter
from topo.generator.emit import rabbitmq as rabbit_emitter
from topo.generator.load import load_topology


def generate(tmp_path: Path, doc: dict[str, Any]) -> Path:
    out = tmp_path / "generated"
    topology = load_topology(write(tmp_path, doc, "source.yaml"))
    for relative, text in {**kafka_emitter.emit(topology), **rabbit_emitter.emit(topology)}.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return out


def run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RABBITMQ_"))}
    return subprocess.run(["bash", str(script)], env={**clean, **env}, capture_output=True, text=True, timeout=300)


def renamed(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {name.replace(old, new, 1): value for name, value in state.items()}


@pytest.mark.usefixtures("topic_cleanup")
def test_topics_sh_gives_the_state_topo_apply_gives(cli: Cli, tmp_path: Path, unique_name: str, kafka_bootstrap: str,
                                                    kafka_admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted, applied = unique_name, f"{unique_name}-apply"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)

    doc = small_doc(scripted)
    script = generate(tmp_path, doc) / "kafka" / "topics.sh"
    first = run(script, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("create  ") == 5
    again = run(script, env)
    assert again.returncode == 0 and "create" not in again.stdout and "update" not in again.stdout, again.stdout

    assert cli("apply", "--topology", write(tmp_path, small_doc(applied)), "--yes")[0] == 0
    by_script = kafka_state(kafka_admin, f"{scripted}.")
    assert by_script == renamed(kafka_state(kafka_admin, f"{applied}."), applied, scripted)
    assert cli("plan", "--topology", write(tmp_path, doc))[0] == 0  # topo sees nothing to do either

    doc["events"]["token.transfer"]["partitions"] = 4
    result = run(generate(tmp_path, doc) / "kafka" / "topics.sh", env)
    assert result.returncode == 0, result.stderr
    assert f"update  {scripted}.token.transfer.1 partitions 3 -> 4" in result.stdout
    assert kafka_state(kafka_admin, f"{scripted}.token.transfer.")[f"{scripted}.token.transfer.1"]["partitions"] == 4

    doc["events"]["token.transfer"]["partitions"] = 2
    result = run(generate(tmp_path, doc) / "kafka" / "topics.sh", env)
    assert result.returncode == 3 and "partitions cannot shrink" in result.stderr


def test_definitions_and_provision_sh_give_the_state_topo_apply_gives(
        cli: Cli, tmp_path: Path, unique_name: str, rabbitmq_management: Any, rabbit_env: str,
        extra_vhosts: Callable[[str], str]) -> None:
    api = rabbitmq_management
    doc = small_doc(unique_name)
    generated = generate(tmp_path, doc)

    assert cli("apply", "--topology", write(tmp_path, doc), "--broker", "rabbitmq", "--yes")[0] == 0
    expected = rabbit_state(api, rabbit_env)
    assert expected["queues"] and expected["bindings"]

    imported = extra_vhosts("defs")
    api.post(f"/api/definitions/{api.quote(imported)}", json=yaml.safe_load(
        (generated / "rabbitmq" / "definitions.json").read_text()))
    assert rabbit_state(api, imported) == expected

    scripted = extra_vhosts("script")
    # Credentials and vhost come from the AMQP URL here; the management URL carries none.
    amqp = f"amqp://{api.user}:{api.password}@127.0.0.1:5672/{urllib.parse.quote(scripted, safe='')}"
    env = {"RABBITMQ_MANAGEMENT_URL": api.url, "RABBITMQ_URL": amqp}
    script = generated / "rabbitmq" / "provision.sh"
    for _ in range(2):  # the second run must change nothing and succeed
        result = run(script, env)
        assert result.returncode == 0, result.stderr
        assert rabbit_state(api, scripted) == expected

    doc["consumer_groups"]["ws"]["retry"] = {"max_retries": 9}  # a different x-delivery-limit
    result = run(generate(tmp_path, doc) / "rabbitmq" / "provision.sh",
                 {"RABBITMQ_MANAGEMENT_URL": api.url, "RABBITMQ_MANAGEMENT_USER": api.user,
                  "RABBITMQ_MANAGEMENT_PASSWORD": api.password, "RABBITMQ_VHOST": scripted})
    assert result.returncode == 3, result.stderr
    assert f"queue {unique_name}.ws.0 exists with other settings" in result.stderr
    assert "inequivalent arg 'x-delivery-limit'" in result.stderr
