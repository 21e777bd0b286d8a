"""`topo generate`: deterministic, atomic, `--check`, stale files removed, no secrets written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from gen_support import REFERENCE, REPO, SECOND, Invoke, snapshot

from topo.generator import pipeline


def generate_in_subprocess(topology: Path, out: Path, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, "-m", "topo", "generate", str(topology), "-o", str(out)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=120)


def test_reference_output(reference_output: Path) -> None:
    files = snapshot(reference_output)
    assert "topology.json" in files
    assert any(path.startswith("schemas/") for path in files)
    for path, data in files.items():
        assert data.endswith(b"\n"), f"{path} does not end with a newline"


@pytest.mark.parametrize("topology", [REFERENCE, SECOND], ids=["reference", "second"])
def test_generation_is_byte_identical_across_processes(topology: Path, tmp_path: Path) -> None:
    # Different hash seeds change the iteration order of sets: output must not depend on it.
    generate_in_subprocess(topology, tmp_path / "a", "1")
    generate_in_subprocess(topology, tmp_path / "b", "2")
    first, second = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert first and first == second


def test_second_topology_generates_cleanly_with_nothing_of_the_explorer(topo: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = topo("generate", str(SECOND), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    for path, data in snapshot(out).items():
        for word in (b"explorer", b"block.new", b"token.transfer", b"websocket", b"138"):
            assert word not in data, f"{path} contains {word!r}"
    assert (out / "python" / "paynet_events.py").is_file()


def test_check_passes_right_after_generate(topo: Invoke, output_copy: Path) -> None:
    result = topo("generate", str(REFERENCE), "-o", str(output_copy), "--check")
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_names_a_changed_file_and_writes_nothing(topo: Invoke, output_copy: Path) -> None:
    changed = output_copy / "topology.json"
    changed.write_text(changed.read_text() + " ")
    (output_copy / "stray.txt").write_text("left over\n")
    (output_copy / "schemas" / "envelope.schema.json").unlink()
    before = snapshot(output_copy)
    result = topo("generate", str(REFERENCE), "-o", str(output_copy), "--check")
    assert result.exit_code == 1
    assert f"changed: {output_copy / 'topology.json'}" in result.stderr
    assert f"would disappear: {output_copy / 'stray.txt'}" in result.stderr
    assert f"would appear: {output_copy / 'schemas' / 'envelope.schema.json'}" in result.stderr
    assert snapshot(output_copy) == before


def test_check_of_a_missing_directory_fails(topo: Invoke, tmp_path: Path) -> None:
    result = topo("generate", str(REFERENCE), "-o", str(tmp_path / "none"), "--check")
    assert result.exit_code == 1
    assert "would appear" in result.stderr
    assert not (tmp_path / "none").exists()


def test_generate_repairs_and_is_then_a_no_op(topo: Invoke, output_copy: Path, reference_output: Path) -> None:
    (output_copy / "topology.json").write_text("{}\n")
    (output_copy / "stray.txt").write_text("left over\n")
    result = topo("generate", str(REFERENCE), "-o", str(output_copy))
    assert result.exit_code == 0
    assert "1 changed, 0 added, 1 removed" in result.stdout
    assert snapshot(output_copy) == snapshot(reference_output)
    stamp = (output_copy / "topology.json").stat().st_mtime_ns
    again = topo("generate", str(REFERENCE), "-o", str(output_copy))
    assert "already up to date" in again.stdout
    assert (output_copy / "topology.json").stat().st_mtime_ns == stamp


def without_event(event: str, tmp_path: Path) -> Path:
    doc: dict[str, Any] = yaml.safe_load(REFERENCE.read_text())
    del doc["events"][event]
    for group in list(doc["consumer_groups"]):
        subscribes = [s for s in doc["consumer_groups"][group]["subscribes"] if s != event]
        if subscribes:
            doc["consumer_groups"][group]["subscribes"] = subscribes
        else:
            del doc["consumer_groups"][group]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_files_of_a_removed_event_disappear(topo: Invoke, output_copy: Path, tmp_path: Path) -> None:
    assert (output_copy / "schemas" / "contract.verified.schema.json").is_file()
    result = topo("generate", str(without_event("contract.verified", tmp_path)), "-o", str(output_copy))
    assert result.exit_code == 0, result.stderr
    assert not (output_copy / "schemas" / "contract.verified.schema.json").exists()
    for path, data in snapshot(output_copy).items():
        assert b"contract.verified" not in data, path
    leftovers = [p.name for p in output_copy.parent.iterdir() if p.name.startswith(".generated")]
    assert leftovers == []


def test_an_invalid_topology_leaves_the_output_untouched(topo: Invoke, output_copy: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    source = REFERENCE.read_text()
    text = source.replace("subscribes: [token.transfer]\n", "subscribes: [token.transfers]\n", 1)
    assert text != source, "the reference topology no longer has the subscription this test misspells"
    broken.write_text(text)
    before = snapshot(output_copy.parent)
    result = topo("generate", str(broken), "-o", str(output_copy))
    assert result.exit_code == 1
    assert "did you mean `token.transfer`?" in result.stderr
    assert snapshot(output_copy.parent) == before


def test_a_failing_emitter_leaves_the_output_untouched(topo: Invoke, output_copy: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(topology: Any) -> dict[str, str]:
        raise RuntimeError("emitter exploded")

    monkeypatch.setattr(pipeline, "emit_all", broken)
    before = snapshot(output_copy.parent)
    result = topo("generate", str(SECOND), "-o", str(output_copy))
    assert result.exit_code == 1
    assert "internal error while generating files" in result.stderr
    assert snapshot(output_copy.parent) == before


def test_a_failure_while_writing_leaves_the_output_untouched(topo: Invoke, output_copy: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_bytes
    calls = []

    def flaky(self: Path, data: bytes) -> int:
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    before = snapshot(output_copy.parent)
    result = topo("generate", str(SECOND), "-o", str(output_copy))
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert snapshot(output_copy.parent) == before
    assert sorted(p.name for p in output_copy.parent.iterdir()) == ["generated"]


def test_no_environment_value_is_written(topo: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "KAFKA_SASL_PASSWORD": "secret-kafka-pw-4f1d",
        "KAFKA_SASL_USERNAME": "secret-kafka-user-8a2c",
        "KAFKA_BOOTSTRAP_SERVERS": "secret-host-9b7e:9092",
        "RABBITMQ_URL": "amqp://u:secret-amqp-pw-3c5a@secret-rabbit-host:5672/%2F",
        "RABBITMQ_MANAGEMENT_URL": "http://u:secret-mgmt-pw-6d0f@secret-rabbit-host:15672",
        "TOPO_STATE_DIR": "/secret-state-dir-1e9a",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "generated"
    result = topo("generate", str(REFERENCE), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    files = snapshot(out)
    for path, data in files.items():
        assert b"secret-" not in data, f"{path} holds an environment value"
    assert b"${KAFKA_SASL_PASSWORD:-}" in files["topology.json"]
    assert b"secret-" not in (result.stdout + result.stderr).encode()


def test_refuses_to_replace_a_directory_it_did_not_generate(topo: Invoke, tmp_path: Path) -> None:
    precious = tmp_path / "src"
    precious.mkdir()
    (precious / "main.py").write_text("print('hello')\n")
    result = topo("generate", str(SECOND), "-o", str(precious))
    assert result.exit_code == 1
    assert "refusing to replace" in result.stderr
    assert (precious / "main.py").read_text() == "print('hello')\n"


def test_refuses_the_current_directory(topo: Invoke) -> None:
    result = topo("generate", str(SECOND), "-o", ".")
    assert result.exit_code == 1
    assert "refusing" in result.stderr
