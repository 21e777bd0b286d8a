"""Paths and helpers shared by the generator tests (a plain module: `conftest` is pytest's name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "topology.yaml"
SECOND = REPO / "tests" / "fixtures" / "topologies" / "second.yaml"
INVALID = REPO / "tests" / "fixtures" / "invalid"

Invoke = Callable[..., Result]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory (relative path -> bytes), including hidden ones."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
