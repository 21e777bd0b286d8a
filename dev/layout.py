"""Where the parts of the import package `topo` live: pyproject's `[tool.setuptools.package-dir]`.

Shared by the tools that cannot follow that mapping themselves (mypy: dev/typecheck.py;
import-linter: dev/layers.py).
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Import package -> folder, as pyproject.toml maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {package: root / folder for package, folder in mapping.items()}


def modules(mapping: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    """(module name, file) of every Python file under the mapped folders, mapped subfolders excluded."""
    folders = set(mapping.values())
    for package, folder in sorted(mapping.items()):
        for file in sorted(folder.rglob("*.py")):
            if any(parent in folders and parent != folder for parent in file.parents):
                continue  # topo/ contains no mapped folder today, but a nested mapping is checked once
            parts = list(file.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), file


def stage(target: Path, mapping: dict[str, Path] | None = None) -> Path:
    """Copy the package as a wheel lays it out (topo/, topo/generator/, ...) under `target`."""
    dirs = package_dirs() if mapping is None else mapping
    for package, folder in sorted(dirs.items()):
        shutil.copytree(folder, target.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target
