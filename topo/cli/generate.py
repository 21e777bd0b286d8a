"""`topo validate` and `topo generate`.

Diagnostics go to stderr as `FILE:LINE:COL: error: message` plus a hint line (or, with --json,
to stdout as one document); the exit status is 1 when there is any error (warnings alone exit 0).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from topo.cli.options import ENV_TOPOLOGY, SOURCE, CliError, default_topology, json_option, topology_option
from topo.cli.source import require_source
from topo.core.model import Topology
from topo.generator.diagnostics import Diagnostic, has_errors, ordered, render_all
from topo.generator.load import load
from topo.generator.pipeline import OutputError, build, guard, write
from topo.generator.pipeline import compare as compare_output

# The positional FILE is the older spelling of -t (kept: `topo generate topology.yaml -o generated`).
# No existence check: an unreadable file is reported as a diagnostic, with exit status 1.
FILE_ARGUMENT = click.argument("file", required=False, type=click.Path(path_type=Path))


def source(file: Path | None, topology_path: Path | None, command: str) -> Path:
    if file is not None and topology_path is not None and file != topology_path:
        raise CliError(f"two topologies given: {file} and -t {topology_path}; pass one")
    chosen = file or topology_path or default_topology()
    if file is None and topology_path is None and not os.environ.get(ENV_TOPOLOGY):
        chosen = SOURCE  # no topology.yaml here: report that, not that the compiled fallback is JSON
    return require_source(chosen, command)


def report(diagnostics: list[Diagnostic]) -> None:
    if diagnostics:
        click.echo(render_all(diagnostics), err=True)


def summary(topology: Topology) -> str:
    return (f"{len(topology.events)} event types, {len(topology.chains)} chains, {topic_count(topology)} topics, "
            f"{len(topology.groups)} consumer groups, broker {topology.broker.value}")


def topic_count(topology: Topology) -> int:
    return sum(len(event.topics) for event in topology.events)


def validation_json(file: Path, topology: Topology | None, diagnostics: list[Diagnostic]) -> dict[str, Any]:
    items = ordered(diagnostics)
    document: dict[str, Any] = {
        "file": str(file), "valid": topology is not None and not has_errors(items),
        "errors": sum(1 for d in items if d.is_error), "warnings": sum(1 for d in items if not d.is_error),
        "diagnostics": [{"severity": d.severity, "file": d.file, "line": d.line, "col": d.col,
                         "message": d.message, "hint": d.hint} for d in items],
        "summary": None,
    }
    if document["valid"] and topology is not None:
        document["summary"] = {"name": topology.name, "events": len(topology.events),
                               "chains": len(topology.chains), "topics": topic_count(topology),
                               "consumer_groups": len(topology.groups), "broker": topology.broker.value}
    return document


def compatibility_errors(path: Path, topology: Topology, ref: str) -> list[Diagnostic]:
    """Errors for the payload changes since `ref` that an event's `compatibility:` level forbids."""
    from topo.cli.compat import load_at
    from topo.cli.gitref import AbsentAtRef
    from topo.generator.compat.enforce import compatibility_diagnostics
    from topo.generator.parse import parse

    try:
        old = load_at(ref, path)
    except AbsentAtRef:  # a topology new since REF: nothing it could break
        return [Diagnostic("warning", str(path), 0, 0, f"not in {ref}: no compatibility to check",
                           "compare with a commit that holds this file")]
    document, _ = parse(path)
    assert document is not None  # it just loaded
    return compatibility_diagnostics(document, old, topology, ref)


@click.command()
@FILE_ARGUMENT
@topology_option(resolve=False)
@json_option
@click.option("--against", "ref", metavar="REF",
              help="Also check each event's `compatibility:` level against the file at this git commit, branch "
                   "or tag (docs/compatibility.md).")
def validate(file: Path | None, topology_path: Path | None, as_json: bool, ref: str | None) -> None:
    """Check the topology.yaml (-t FILE; default topology.yaml) and report every error with its line and column."""
    path = source(file, topology_path, "validate")
    topology, diagnostics = load(path)
    if ref is not None and topology is not None and not has_errors(diagnostics):
        diagnostics = [*diagnostics, *compatibility_errors(path, topology, ref)]
    valid = topology is not None and not has_errors(diagnostics)
    if as_json:
        click.echo(json.dumps(validation_json(path, topology, diagnostics), indent=2, sort_keys=True))
    else:
        report(diagnostics)
        if valid and topology is not None:
            click.echo(f"{path}: valid ({summary(topology)})")
    if not valid:
        sys.exit(1)


@click.command()
@FILE_ARGUMENT
@topology_option(resolve=False)
@click.option("-o", "--output", "output", default="generated", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output directory (replaced as a whole).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 and list the files that would change.")
def generate(file: Path | None, topology_path: Path | None, output: Path, check: bool) -> None:
    """Compile the topology.yaml (-t FILE; default topology.yaml) into OUTPUT: all files, atomically,
    deterministically."""
    path = source(file, topology_path, "generate")
    result = build(path)
    report(result.diagnostics)
    if result.files is None or has_errors(result.diagnostics):
        click.echo(f"{path}: not generated; {output} is unchanged", err=True)
        sys.exit(1)
    try:
        guard(output, path)
        if check:
            changes = compare_output(output, result.files)
            if changes:
                click.echo(f"{output} is out of date with {path} ({changes.summary()}):", err=True)
                click.echo("\n".join(changes.lines(output)), err=True)
                click.echo(f"run `topo generate -t {path} -o {output}` and commit the result", err=True)
                sys.exit(1)
            click.echo(f"{output} is up to date with {path} ({len(result.files)} files)")
            return
        changes = write(output, result.files)
    except (OutputError, OSError) as exc:
        click.echo(f"{output}: error: {exc}", err=True)
        sys.exit(1)
    state = changes.summary() if changes else "already up to date"
    click.echo(f"{output}: {len(result.files)} files, {state}")
