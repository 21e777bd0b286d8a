"""Fixtures of the generator tests: paths, a CLI runner, and output-directory snapshots."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gen_support import REFERENCE, REPO, Invoke

from topo.cli import main


@pytest.fixture
def topo(monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Runs the real `topo` CLI in-process; stderr is kept apart from stdout."""
    monkeypatch.chdir(REPO)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def reference_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generated/ of the reference topology, built once per session through the CLI."""
    out = tmp_path_factory.mktemp("reference") / "generated"
    result = CliRunner().invoke(main, ["generate", str(REFERENCE), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture
def output_copy(reference_output: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the reference output that a test may regenerate or damage."""
    out = tmp_path / "generated"
    shutil.copytree(reference_output, out)
    yield out
