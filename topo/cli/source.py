"""Where every command takes the topology from: exactly the file given by -t/--topology.

A topology.yaml is validated and compiled in memory; a topology.json is the compiled model as
`topo generate` writes it. Runtime commands also need the generated event classes: `generated_folder`
finds them and refuses a folder that no longer matches the topology. A topology.json records the
hash of its topology.yaml: `check_source` warns (or, strict, refuses) when that file changed since.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import click
import pydantic

from topo.cli.options import COMPILED, CliError, unknown_name
from topo.core.model import ConsumerGroup, EventType, Topology
from topo.generator.diagnostics import TopologyError

COMPILED_NAME = "topology.json"


def is_compiled(path: Path) -> bool:
    return path.suffix == ".json"


def load(path: Path) -> Topology:
    """The resolved topology of `path` (YAML, validated first, or compiled JSON); CliError otherwise."""
    if not path.is_file():
        hint = ("run `topo generate` first, or pass -t topology.yaml" if path == COMPILED
                else "pass -t with the path of a topology.yaml or topology.json")
        raise CliError(f"{path}: no such file; {hint}")
    if is_compiled(path):
        try:
            return Topology.model_validate_json(path.read_text(encoding="utf-8"))
        except pydantic.ValidationError as exc:
            raise CliError(f"{path}: not a compiled topology ({exc.error_count()} error(s), first: "
                           f"{exc.errors()[0]['msg']}); regenerate it with `topo generate`") from None
    from topo.generator.load import load_topology

    try:
        return load_topology(path)
    except TopologyError as exc:
        raise CliError(first_problem(path, exc)) from None


def first_problem(path: Path, error: TopologyError) -> str:
    """One line for an invalid topology.yaml: its first error, the hint, and where the others are listed."""
    problems = [d for d in error.diagnostics if d.is_error] or error.diagnostics
    first = problems[0]
    place = f"{first.file}:{first.line}:{first.col}" if first.line else first.file
    hint = f" ({first.hint})" if first.hint else ""
    more = f"; {len(problems) - 1} more error(s): run `topo validate -t {path}`" if len(problems) > 1 else ""
    return f"{place}: {first.message}{hint}{more}"


def stale_source(path: Path, topology: Topology) -> str | None:
    """Why the compiled topology.json `path` is stale, or None: the topology.yaml it records (in
    the parent of its folder, as `topo generate` lays it out) exists and no longer has its hash."""
    if not is_compiled(path) or topology.source is None:
        return None
    source = Path(os.path.normpath(path.parent / os.pardir / topology.source.file))
    if not source.is_file() or hashlib.sha256(source.read_bytes()).hexdigest() == topology.source.sha256:
        return None
    output = "" if path.parent == Path("generated") else f" -o {path.parent}"
    return f"{path} is stale: {source} changed since it was generated; run `topo generate -t {source}{output}`"


def check_source(path: Path, topology: Topology, strict: bool) -> None:
    """One warning line on stderr for a stale topology.json; with `strict`, a CliError instead."""
    problem = stale_source(path, topology)
    if problem is None:
        return
    if strict:
        raise CliError(f"{problem} (refused: --strict)")
    click.echo(f"warning: {problem}", err=True)


def require_source(path: Path, command: str) -> Path:
    """validate and generate read the YAML source: a compiled topology.json is refused."""
    if is_compiled(path):
        raise CliError(f"{path}: `topo {command}` reads a topology.yaml, not a compiled topology.json; "
                       "pass -t topology.yaml")
    return path


def generated_folder(path: Path, topology: Topology, override: Path | None = None) -> Path:
    """The folder of `topo generate` output holding python/<module>.py for `topology`.

    Default: the folder of a topology.json, or generated/ beside a topology.yaml. The folder's
    topology.json must be the same model (unless it is the very file given), else it is stale.
    """
    folder = override if override is not None else (path.parent if is_compiled(path) else path.parent / "generated")
    compiled = folder / COMPILED_NAME
    if is_compiled(path) and override is None:
        return folder  # the classes beside the file given; the events module itself checks they match it
    regenerate = f"run `topo generate -t {path}" + ("" if folder == Path("generated") else f" -o {folder}") + "`"
    if not compiled.is_file():
        raise CliError(f"{folder}: no generated output for {path} ({compiled} not found); {regenerate}")
    try:
        generated = Topology.model_validate_json(compiled.read_text(encoding="utf-8"))
    except pydantic.ValidationError:
        generated = None
    if generated != topology:
        raise CliError(f"{folder} is stale: it was not generated from {path} as it is now; {regenerate}")
    return folder


def pick_group(topology: Topology, name: str) -> ConsumerGroup:
    for group in topology.groups:
        if group.name == name:
            return group
    raise unknown_name("consumer group", name, [g.name for g in topology.groups])


def pick_groups(topology: Topology, names: Sequence[str]) -> tuple[ConsumerGroup, ...]:
    """The named groups (every group when none is named)."""
    return tuple(pick_group(topology, name) for name in names) if names else topology.groups


def pick_event(topology: Topology, name: str) -> EventType:
    for event in topology.events:
        if event.name == name:
            return event
    raise unknown_name("event type", name, [e.name for e in topology.events])
