"""The shared CLI options without a broker: -t resolution, TOPO_TOPOLOGY, reading exactly the file
given, the YAML-only commands, stale generated folders, did-you-mean, the error style, --broker names.

Each command here fails on a name or a file before it would connect to a broker: the error lists
the groups or events of the topology the command read, which shows which file that was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.support import generated, small_doc, topo, write_yaml
from topo.cli.options import COMPILED, ENV_TOPOLOGY, SOURCE, default_topology


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_TOPOLOGY, raising=False)
    monkeypatch.delenv("TOPO_BROKER", raising=False)
    return tmp_path


def groups_named_in(output: str) -> str:
    """The `(valid: ...)` list of an unknown-name error."""
    assert "(valid: " in output, output
    return output.split("(valid: ", 1)[1].split(")", 1)[0]


def test_default_resolution_prefers_the_environment_then_topology_yaml_then_generated(workdir: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch
                                                                                      ) -> None:
    assert default_topology() == COMPILED
    write_yaml(workdir / "topology.yaml", small_doc("local"))
    assert default_topology() == SOURCE
    monkeypatch.setenv(ENV_TOPOLOGY, "elsewhere/t.yaml")
    assert default_topology() == Path("elsewhere/t.yaml")


def test_every_runtime_command_resolves_the_default_the_same_way(workdir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    generated(write_yaml(workdir / "src" / "topology.yaml", small_doc("compiled", ("from-json",))),
              workdir / "generated")
    commands = [("dlq", "list", "--group", "nope"), ("dlq", "replay", "--group", "nope"),
                ("run", "--group", "nope"), ("lag", "--group", "nope")]
    for command in commands:  # no topology.yaml here: generated/topology.json
        assert groups_named_in(topo(*command).output) == "from-json", command
    write_yaml(workdir / "topology.yaml", small_doc("local", ("from-yaml",)))
    for command in commands:
        assert groups_named_in(topo(*command).output) == "from-yaml", command
    write_yaml(workdir / "other.yaml", small_doc("other", ("from-env",)))
    monkeypatch.setenv(ENV_TOPOLOGY, str(workdir / "other.yaml"))
    for command in commands:
        assert groups_named_in(topo(*command).output) == "from-env", command
    assert groups_named_in(topo("dlq", "list", "-t", "topology.yaml", "--group", "nope").output) == "from-yaml"


def test_a_command_reads_exactly_the_file_given(workdir: Path) -> None:
    folder = workdir / "some" / "dir"
    generated(write_yaml(workdir / "a.yaml", small_doc("sibling", ("sibling-group",))), folder)
    custom = generated(write_yaml(workdir / "b.yaml", small_doc("custom", ("custom-group",))), workdir / "b")
    shutil.copy(custom / "topology.json", folder / "custom.json")
    for command in (("dlq", "list"), ("dlq", "replay"), ("run",)):
        result = topo(*command, "-t", folder / "custom.json", "--group", "nope")
        assert result.exit_code != 0
        assert groups_named_in(result.output) == "custom-group", result.output
    missing = topo("dlq", "list", "-t", folder / "absent.json", "--group", "x")
    assert missing.exit_code == 1 and f"{folder / 'absent.json'}: no such file" in missing.stderr


def test_unknown_names_get_one_error_with_a_did_you_mean_hint(workdir: Path) -> None:
    generated(write_yaml(workdir / "topology.yaml", small_doc("names")), workdir / "generated")
    cases = [
        (("run", "--group", "indexr"), "unknown consumer group 'indexr'; did you mean 'indexer'?"),
        (("dlq", "list", "--group", "websockt"), "unknown consumer group 'websockt'; did you mean 'websocket'?"),
        (("dlq", "replay", "--group", "indexer2"), "did you mean 'indexer'?"),
        (("lag", "-g", "indexer", "-g", "websoket"), "did you mean 'websocket'?"),
        (("monitor", "--group", "idx"), "unknown consumer group 'idx'"),
        (("publish", "block.nwe", "--payload", "{}"), "unknown event type 'block.nwe'; did you mean 'block.new'?"),
        (("tail", "token.transfers"), "did you mean 'token.transfer'?"),
    ]
    for command, expected in cases:
        result = topo(*command)
        assert result.exit_code == 1, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (command, lines)
        assert result.stdout == ""
    assert "(valid: block.new, token.transfer)" in topo("publish", "zzz", "--payload", "{}").stderr


def test_validate_and_generate_read_the_yaml_source(workdir: Path) -> None:
    source = write_yaml(workdir / "topology.yaml", small_doc("source"))
    out = generated(source, workdir / "generated")
    for command in ("validate", "generate"):
        refused = topo(command, "-t", out / "topology.json")
        assert refused.exit_code == 1 and "reads a topology.yaml, not a compiled topology.json" in refused.stderr
        assert refused.stderr.startswith("error: ")
        both = topo(command, "topology.yaml", "-t", "other.yaml")
        assert both.exit_code == 1 and "two topologies given" in both.stderr
    assert topo("validate").exit_code == 0  # ./topology.yaml
    assert topo("validate", "topology.yaml").stdout.startswith("topology.yaml: valid")  # the positional alias
    assert topo("generate", "topology.yaml", "-o", "generated", "--check").exit_code == 0
    assert topo("generate", "-t", "topology.yaml", "-o", "generated", "--check").exit_code == 0
    source.unlink()
    missing = topo("validate")
    assert missing.exit_code == 1 and "topology.yaml" in missing.stderr and "cannot read" in missing.stderr


def test_validate_json_holds_the_diagnostics_and_the_summary(workdir: Path) -> None:
    write_yaml(workdir / "topology.yaml", small_doc("summary"))
    valid = topo("validate", "--json")
    assert valid.exit_code == 0
    document = json.loads(valid.stdout)
    assert document["valid"] is True and document["errors"] == 0
    assert document["summary"] == {"name": "summary", "events": 2, "chains": 1, "topics": 2, "consumer_groups": 2,
                                   "broker": "kafka"}
    broken = small_doc("broken")
    broken["consumer_groups"]["indexer"]["subscribes"] = ["block.neww"]
    write_yaml(workdir / "broken.yaml", broken)
    invalid = topo("validate", "-t", "broken.yaml", "--json")
    assert invalid.exit_code == 1
    report = json.loads(invalid.stdout)
    assert report["valid"] is False and report["errors"] >= 1 and report["summary"] is None
    [error] = [d for d in report["diagnostics"] if "block.neww" in d["message"]]
    assert error["severity"] == "error" and error["file"] == "broken.yaml" and error["line"] > 0


def test_runtime_commands_on_a_yaml_need_its_generated_folder_up_to_date(workdir: Path) -> None:
    source = write_yaml(workdir / "topology.yaml", small_doc("stale"))
    payload = ("--payload", '{"chain_id": 1, "block_number": 1}')
    absent = topo("publish", "block.new", *payload)
    assert absent.exit_code == 1
    assert "generated/topology.json not found" in absent.stderr
    assert "run `topo generate -t topology.yaml`" in absent.stderr
    generated(source, workdir / "generated")
    changed = small_doc("stale")
    changed["events"]["block.new"]["payload"]["miner"] = {"type": "string", "required": False}
    write_yaml(source, changed)
    stale = topo("publish", "block.new", *payload)
    assert stale.exit_code == 1
    assert stale.stderr.strip() == ("error: generated is stale: it was not generated from topology.yaml as it is "
                                    "now; run `topo generate -t topology.yaml`")
    elsewhere = topo("publish", "block.new", *payload, "--generated", "gen2")
    assert "run `topo generate -t topology.yaml -o gen2`" in elsewhere.stderr


def test_broker_takes_kafka_or_rabbitmq_everywhere(workdir: Path) -> None:
    generated(write_yaml(workdir / "topology.yaml", small_doc("brokers")), workdir / "generated")
    for command in (("run", "--group", "indexer"), ("publish", "block.new", "--payload", "{}"), ("tail", "block.new"),
                    ("dlq", "list", "--group", "indexer"), ("lag",), ("plan",), ("apply",)):
        result = topo(*command, "--broker", "memory")
        assert result.exit_code == 1 and "'memory' is not one of 'kafka', 'rabbitmq'" in result.output, command
