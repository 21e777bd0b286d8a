"""`topo diff` and `topo validate --against` on a corpus of topology changes.

tests/fixtures/compat/cases.yaml: each case patches base.yaml; `topo diff OLD NEW --json` must
report exactly the expected (rule, side, level) triples and exit with the expected code. Then
`--against REF` on a scratch git repository, and each compatibility level enforced by
`topo validate --against`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from topo.cli import main
from topo.generator.compat.rules import RULES

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "compat"
BASE: dict[str, Any] = yaml.safe_load((FIXTURES / "base.yaml").read_text())
CASES: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "cases.yaml").read_text())


def patched(base: Any, patch: Any) -> Any:
    """Mappings merged key by key, null deleting a key; anything else replaced."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = patched(merged.get(key), value)
    return merged


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def topo(*arguments: str) -> Any:
    return CliRunner().invoke(main, list(arguments), catch_exceptions=False)


def test_the_corpus_has_30_changes_and_every_rule() -> None:
    assert len(CASES) >= 30
    used = {rule for case in CASES for rule, _, _ in case["expect"]}
    assert used == set(RULES), f"without a case: {sorted(set(RULES) - used)}; unknown: {sorted(used - set(RULES))}"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_each_change_is_classified_as_the_rule_table_says(case: dict[str, Any], tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", BASE)
    new = write(tmp_path / "new.yaml", patched(BASE, case["patch"]))
    result = topo("diff", str(old), str(new), "--json")
    assert result.exit_code == case["exit"], result.output
    report = json.loads(result.stdout)
    found = {(c["rule"], c["side"], c["level"]) for c in report["changes"]}
    assert found == {tuple(item) for item in case["expect"]}, json.dumps(report["changes"], indent=1)
    assert report["exit_code"] == case["exit"]


@pytest.mark.parametrize("name", ["optional field added", "pattern changed", "ordering relaxed (RabbitMQ work "
                                  "queues lose single-active-consumer)"])
def test_the_human_output_lists_each_change_with_its_level_and_fix(name: str, tmp_path: Path) -> None:
    case = next(case for case in CASES if case["name"] == name)
    old = write(tmp_path / "old.yaml", BASE)
    new = write(tmp_path / "new.yaml", patched(BASE, case["patch"]))
    human = topo("diff", str(old), str(new))
    assert human.exit_code == case["exit"]
    assert human.stdout.startswith(f"{old} -> {new}: ")
    for rule, side, level in case["expect"]:
        section = human.stdout[human.stdout.index(f"\n{side} ("):]
        assert re.search(rf"\n  {level}\s+.*\[{rule}\]\n" + ("" if level == "safe" else r"\s+fix: "), section), \
            human.stdout


def test_the_rule_table_documents_every_rule() -> None:
    page = (REPO_ROOT / "docs" / "compatibility.md").read_text()
    missing = [rule for rule in RULES if f"`{rule}`" not in page]
    assert not missing, f"docs/compatibility.md does not list {missing}"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A scratch git repository whose HEAD holds base.yaml as topology.yaml."""
    def git(*arguments: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
                       check=True, capture_output=True)

    git("init", "-q")
    write(tmp_path / "topology.yaml", BASE)
    git("add", "topology.yaml")
    git("commit", "-q", "-m", "base")
    return tmp_path / "topology.yaml"


def test_diff_against_a_git_commit(repository: Path) -> None:
    assert topo("diff", "--against", "HEAD", str(repository)).stdout.endswith("no changes\n")
    write(repository, patched(BASE, {"events": {"order.placed": {"partitions": 1}}}))
    result = topo("diff", "--against", "HEAD", "-t", str(repository), "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["old"] == f"HEAD:{repository}"
    missing = topo("diff", "--against", "no-such-ref", str(repository))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr and "no-such-ref" in missing.stderr
    added = write(repository.with_name("added.yaml"), BASE)  # not committed: absent at HEAD
    absent = topo("diff", "--against", "HEAD", str(added))
    assert absent.exit_code == 1 and "is not in HEAD" in absent.stderr
    validated = topo("validate", "--against", "HEAD", str(added))
    assert validated.exit_code == 0 and "warning: not in HEAD: no compatibility to check" in validated.stderr


@pytest.mark.parametrize(("patch", "errors"), [
    # backward (the default): new readers must read old events
    ({"events": {"order.placed": {"payload": {"shipping": "string"}}}},
     ["event order.placed: required field shipping (string) added since HEAD breaks its compatibility level "
      "`backward`"]),
    ({"events": {"order.placed": {"payload": {"buyer": None}}}}, []),  # old readers: not backward's concern
    # forward: old readers must read new events
    ({"events": {"order.placed": {"compatibility": "forward", "payload": {"shipping": "string"}}}}, []),
    ({"events": {"order.placed": {"compatibility": "forward", "payload": {"buyer": None}}}},
     ["event order.placed: required field buyer (address) removed since HEAD breaks its compatibility level "
      "`forward`"]),
    # full (order.audited, whose readers are strict): both ways
    ({"events": {"order.audited": {"payload": {"comment": {"type": "string", "required": False}}}}},
     ["event order.audited: optional field comment (string) added since HEAD breaks its compatibility level "
      "`full`"]),
    # none: nothing enforced
    ({"events": {"order.placed": {"compatibility": "none", "payload": {"amount": "string"}}}}, []),
])
def test_validate_against_enforces_each_compatibility_level(repository: Path, patch: dict[str, Any],
                                                            errors: list[str]) -> None:
    write(repository, patched(BASE, patch))
    result = topo("validate", "--against", "HEAD", str(repository))
    assert result.exit_code == (1 if errors else 0), result.output
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(lines) == len(errors), result.stderr
    for line, error in zip(lines, errors, strict=True):
        place, message = line.split(": error: ", 1)
        assert re.fullmatch(rf"{re.escape(str(repository))}:\d+:\d+", place), line
        assert message.startswith(error), line
    if errors:
        assert "hint: " in result.stderr and "compatibility: none" in result.stderr


def test_mistakes_exit_1_naming_the_fix(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", BASE)
    one = topo("diff", str(old))
    assert one.exit_code == 1 and "topo diff OLD NEW" in one.stderr and "--against REF" in one.stderr
    broken = write(tmp_path / "new.yaml", patched(BASE, {"events": {"order.placed": {"key": "nope"}}}))
    invalid = topo("diff", str(old), str(broken))
    assert invalid.exit_code == 1 and invalid.stderr.startswith(f"error: {broken}:"), invalid.stderr
