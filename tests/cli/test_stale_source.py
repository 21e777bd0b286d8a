"""A compiled topology.json records the hash of its topology.yaml: `topo run`, `publish` and `apply`
given the JSON warn in one line when that YAML changed since, and refuse with --strict.

Every command here fails on an unknown name (or is refused) before it would reach a broker.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.cli.support import generated, small_doc, topo, write_yaml
from topo.cli.options import ENV_TOPOLOGY

COMPILED = "generated/topology.json"
WARNING = ("warning: generated/topology.json is stale: topology.yaml changed since it was generated; "
           "run `topo generate -t topology.yaml`")
COMMANDS = (("run", "-t", COMPILED, "--group", "nope"),
            ("publish", "nope", "-t", COMPILED, "--payload", "{}"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_TOPOLOGY, raising=False)
    monkeypatch.delenv("TOPO_BROKER", raising=False)
    generated(write_yaml(tmp_path / "topology.yaml", small_doc("stale")), tmp_path / "generated")
    return tmp_path


def touch_up(source: Path) -> None:
    """A change of the YAML's bytes only: the compiled model would be the same, the hash is not."""
    source.write_text(source.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")


def test_the_compiled_topology_records_its_source_by_name_and_hash(workdir: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    source = workdir / "topology.yaml"
    recorded = json.loads((workdir / COMPILED).read_text())["source"]
    assert recorded == {"file": "topology.yaml", "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    generated(write_yaml(elsewhere / "topology.yaml", small_doc("stale")), elsewhere / "out")
    assert (elsewhere / "out" / "topology.json").read_text() == (workdir / COMPILED).read_text()


def test_an_unchanged_source_gives_no_warning(workdir: Path) -> None:
    for command in COMMANDS:
        result = topo(*command)
        assert result.exit_code != 0 and "nope" in result.stderr, command  # the command went on to the name
        assert "stale" not in result.stderr, command


def test_run_and_publish_warn_in_one_line_when_the_source_changed(workdir: Path) -> None:
    touch_up(workdir / "topology.yaml")
    for command in COMMANDS:
        result = topo(*command)
        lines = result.stderr.splitlines()
        assert lines[0] == WARNING, command
        assert "unknown" in lines[1] and "'nope'" in lines[1], command  # and it went on


def test_strict_refuses_a_stale_topology_json_in_run_publish_and_apply(workdir: Path) -> None:
    touch_up(workdir / "topology.yaml")
    for command in (*COMMANDS, ("apply", "-t", COMPILED, "--yes")):
        result = topo(*command, "--strict")
        assert result.exit_code == 1, command
        assert result.stderr.strip() == f"error: {WARNING.removeprefix('warning: ')} (refused: --strict)", command


def test_strict_accepts_an_up_to_date_topology_json(workdir: Path) -> None:
    result = topo("run", "-t", COMPILED, "--group", "nope", "--strict")
    assert "stale" not in result.stderr and "'nope'" in result.stderr


def test_no_warning_when_the_recorded_source_is_not_beside_the_output(workdir: Path) -> None:
    (workdir / "topology.yaml").rename(workdir / "moved.yaml")
    result = topo("run", "-t", COMPILED, "--group", "nope", "--strict")
    assert "stale" not in result.stderr and "'nope'" in result.stderr


def test_another_output_folder_is_named_in_the_fix(workdir: Path) -> None:
    generated(workdir / "topology.yaml", workdir / "build")
    touch_up(workdir / "topology.yaml")
    result = topo("run", "-t", "build/topology.json", "--group", "nope")
    assert result.stderr.splitlines()[0] == ("warning: build/topology.json is stale: topology.yaml changed since it "
                                             "was generated; run `topo generate -t topology.yaml -o build`")
