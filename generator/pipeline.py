"""topology.yaml -> generated/: load, validate, resolve, emit, then compare or write atomically.

Writing is all or nothing: the files go into a staging directory beside the output directory,
which then replaces the old one by two renames. A failure at any point leaves the previous output
untouched, and files no emitter produces any more (a removed event's) disappear with the old tree.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from topo.core.model import Topology
from topo.generator.diagnostics import Diagnostic
from topo.generator.emit import Files, emit_all
from topo.generator.load import load

# Written into the output directory by tools (imports, type checkers), never by topo.
IGNORED_DIRS = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})
IGNORED_SUFFIXES = (".pyc",)
# Every output directory holds this file (emit/topology_json.py): how topo recognises its own.
MARKER = "topology.json"


class OutputError(Exception):
    """The output directory cannot be written (not a topo directory, a bad emitter path...)."""


@dataclass(frozen=True)
class Changes:
    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def lines(self, out_dir: Path) -> list[str]:
        return ([f"  changed: {out_dir / path}" for path in self.changed]
                + [f"  would appear: {out_dir / path}" for path in self.added]
                + [f"  would disappear: {out_dir / path}" for path in self.removed])

    def summary(self) -> str:
        return f"{len(self.changed)} changed, {len(self.added)} added, {len(self.removed)} removed"


@dataclass(frozen=True)
class Build:
    topology: Topology | None
    files: Files | None  # None when the topology has errors or an emitter failed
    diagnostics: list[Diagnostic]


def build(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Build:
    """Load, validate, resolve and emit; no IO besides reading the topology."""
    topology, diagnostics = load(path, env)
    if topology is None:
        return Build(None, None, diagnostics)
    try:
        files = emit_all(topology)
        for relative in files:
            check_relative(relative)
    except Exception as exc:  # an emitter bug must not leave half-written output
        return Build(topology, None, [*diagnostics, Diagnostic(
            "error", os.fspath(path), 0, 0, f"internal error while generating files: {exc!r}",
            "this is a bug in a topo emitter; please report it with your topology.yaml")])
    # Every generated file ends with a newline (POSIX text files; clean diffs).
    files = {relative: text if text.endswith("\n") else text + "\n" for relative, text in files.items()}
    return Build(topology, dict(sorted(files.items())), diagnostics)


def check_relative(relative: str) -> None:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not pure.parts or any(part in ("", ".", "..") for part in pure.parts) \
            or "\\" in relative or pure.parts[0] in IGNORED_DIRS:
        raise OutputError(f"emitter path {relative!r} is not a plain relative path inside the output directory")


def existing(out_dir: Path) -> dict[str, bytes]:
    """Files under out_dir (relative POSIX path -> bytes), tool caches left out."""
    found: dict[str, bytes] = {}
    if not out_dir.is_dir():
        return found
    for root, dirs, names in os.walk(out_dir):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in names:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            full = Path(root, name)
            found[full.relative_to(out_dir).as_posix()] = full.read_bytes()
    return found


def compare(out_dir: Path, files: Files) -> Changes:
    current = existing(out_dir)
    changed = [p for p, text in files.items() if p in current and current[p] != text.encode("utf-8")]
    added = [p for p in files if p not in current]
    removed = [p for p in current if p not in files]
    return Changes(tuple(sorted(changed)), tuple(sorted(added)), tuple(sorted(removed)))


def guard(out_dir: Path, topology_file: Path) -> None:
    """Refuse to replace a directory topo did not create, or one that holds the topology."""
    target = out_dir.resolve()
    source = topology_file.resolve()
    if target == source.parent or target in source.parents or target in Path.cwd().resolve().parents \
            or target == Path.cwd().resolve():
        raise OutputError(f"refusing to use {out_dir} as output directory: it contains the topology or the "
                          "current directory; use a dedicated directory such as `generated`")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{out_dir} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise OutputError(f"refusing to replace {out_dir}: it is not empty and has no {MARKER}, so topo did not "
                          "generate it; remove it or choose another output directory")


def write(out_dir: Path, files: Files) -> Changes:
    """Make out_dir hold exactly `files`, atomically; does nothing when it already does."""
    changes = compare(out_dir, files)
    if not changes:
        return changes
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    mode = out_dir.stat().st_mode & 0o7777 if out_dir.is_dir() else 0o755
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=parent))
    try:
        for relative, text in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))
        staging.chmod(mode)
        swap(staging, out_dir.absolute())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return changes


def swap(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
    out_dir.rename(retired)
    try:
        staging.rename(out_dir)
    except BaseException:
        retired.rename(out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
