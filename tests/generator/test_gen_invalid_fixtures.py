"""Each file of tests/fixtures/invalid/ holds one defect, announced in its header:

    # expect: LINE:COL: message fragment

Through the real CLI, `topo validate` and `topo generate` must exit 1 with exactly one error,
at that line and column, mentioning the fragment (in the message or the hint), and must write
nothing: an existing output directory stays byte-identical and no staging directory is left.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from gen_support import INVALID, Invoke, snapshot

FIXTURES = sorted(INVALID.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$", re.MULTILINE)
ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.*)$")


def expectation(fixture: Path) -> tuple[int, int, str]:
    match = EXPECT.search(fixture.read_text(encoding="utf-8"))
    assert match, f"{fixture.name} has no `# expect: LINE:COL: fragment` header"
    return int(match.group(1)), int(match.group(2)), match.group(3).strip()


def errors(stderr: str) -> list[tuple[int, int, str]]:
    """(line, col, message + hint) of every error in the CLI's output."""
    found = []
    lines = stderr.splitlines()
    for index, text in enumerate(lines):
        match = ERROR_LINE.match(text)
        if match:
            hint = lines[index + 1] if index + 1 < len(lines) and lines[index + 1].startswith("  hint: ") else ""
            found.append((int(match["line"]), int(match["col"]), f"{match['message']} {hint}"))
    return found


def test_there_are_at_least_thirty_invalid_topologies() -> None:
    assert len(FIXTURES) >= 30


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_validate_reports_the_defect_at_its_node(fixture: Path, topo: Invoke,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPO_TEST_SURELY_UNSET", raising=False)
    line, col, fragment = expectation(fixture)
    result = topo("validate", str(fixture))
    assert result.exit_code == 1, result.output
    found = errors(result.stderr)
    assert len(found) == 1, f"expected exactly one error, got:\n{result.stderr}"
    assert found[0][:2] == (line, col), f"expected {line}:{col}, got:\n{result.stderr}"
    assert fragment in found[0][2], f"expected {fragment!r} in:\n{result.stderr}"
    assert f"{fixture}:{line}:{col}: error: " in result.stderr


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_generate_writes_nothing(fixture: Path, topo: Invoke, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPO_TEST_SURELY_UNSET", raising=False)
    line, col, _fragment = expectation(fixture)
    out = tmp_path / "generated"
    out.mkdir()
    (out / "topology.json").write_text("{}\n")  # an earlier output that must survive
    (out / "python").mkdir()
    (out / "python" / "old_events.py").write_text("# previous run\n")
    before = snapshot(tmp_path)
    result = topo("generate", str(fixture), "-o", str(out))
    assert result.exit_code == 1, result.output
    assert f"{fixture}:{line}:{col}: error: " in result.stderr
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_generate_check_fails_too(fixture: Path, topo: Invoke, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPO_TEST_SURELY_UNSET", raising=False)
    result = topo("generate", str(fixture), "-o", str(tmp_path / "generated"), "--check")
    assert result.exit_code == 1
    assert not (tmp_path / "generated").exists()
