"""Packaging: the wheel users install works on its own, away from the checkout.

The wheel is built from a copy of the working tree's files (tracked and new, nothing ignored, so
no stale `build/` folder leaks in) and installed into a fresh virtualenv with its dependencies
resolved from the package index: a dependency missing from pyproject.toml, a subpackage
setup.py does not list or a template left out of package-data fails here, not on a user's
machine. The install takes under a minute; it is done once for the module.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 120)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def topo(self) -> Path:
        return self.venv / "bin" / "topo"


def run(*command: str | Path, cwd: Path, timeout: float = INSTALL_TIMEOUT) -> str:
    """Run a command outside the checkout's virtualenv; fail with its output when it fails."""
    environment = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, command))} exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def source_copy(target: Path) -> Path:
    """The files a fresh clone of the working tree would hold (tracked and new, not ignored)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO)
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file():  # a tracked file deleted in the working tree is gone from the copy too
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    source = source_copy(root / "source")
    wheelhouse = root / "wheelhouse"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheelhouse, source, cwd=root)
    [wheel] = wheelhouse.glob("*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=root)
    return Installed(wheel=wheel, venv=venv)


def test_the_repository_holds_no_symlink() -> None:
    entries = run("git", "ls-files", "-s", cwd=REPO).splitlines()
    links = [entry.split("\t", 1)[1] for entry in entries if entry.startswith("120000 ")]
    assert links == []


def test_the_wheel_holds_every_part_and_no_symlink(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        members = wheel.infolist()
    links = [m.filename for m in members if stat.S_ISLNK(m.external_attr >> 16)]
    assert links == []
    names = {m.filename for m in members}
    for part in ("topo/cli/", "topo/core/", "topo/generator/", "topo/runtime/", "topo/provision/"):
        assert any(name.startswith(part) and name.endswith(".py") for name in names), f"no module under {part}"
    assert any(name.startswith("topo/templates/") and name.endswith(".j2") for name in names), "no template"
    # Every template in the checkout is in the wheel.
    templates = {f"topo/templates/{p.relative_to(REPO / 'templates').as_posix()}"
                 for p in (REPO / "templates").rglob("*.j2")}
    assert templates and templates <= names, sorted(templates - names)


def test_the_installed_package_is_the_wheels_not_the_checkouts(installed: Installed, tmp_path: Path) -> None:
    located = run(installed.python, "-c", "import topo.generator, topo.runtime, topo.provision, topo.templates; "
                  "print(topo.generator.__file__); print(topo.runtime.__file__); print(topo.provision.__file__)",
                  cwd=tmp_path)
    files = [Path(line) for line in located.split()]
    assert len(files) == 3
    for file in files:
        assert file.is_relative_to(installed.venv), f"{file} is outside the fresh virtualenv {installed.venv}"


def test_topo_generate_from_the_wheel_writes_the_committed_generated_folder(installed: Installed,
                                                                           tmp_path: Path) -> None:
    output = tmp_path / "generated"
    run(installed.topo, "generate", REPO / "topology.yaml", "-o", output, cwd=tmp_path)
    committed = REPO / "generated"
    produced = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(committed) for p in committed.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    assert expected and produced == expected
    different = [str(p) for p in produced if not filecmp.cmp(output / p, committed / p, shallow=False)]
    assert different == [], f"differ from generated/ byte for byte: {different}"
