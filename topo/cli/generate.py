"""`topo validate` and `topo generate`.

Diagnostics go to stderr as `FILE:LINE:COL: error: message` plus a hint line; the exit status is
1 when there is any error (warnings alone exit 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from topo.core.model import Topology
from topo.generator.diagnostics import Diagnostic, has_errors, render_all
from topo.generator.load import load
from topo.generator.pipeline import OutputError, build, guard, write
from topo.generator.pipeline import compare as compare_output

# No existence check here: an unreadable file is reported as a diagnostic, with exit status 1.
FILE_ARGUMENT = click.argument("file", default="topology.yaml", type=click.Path(path_type=Path))


def report(diagnostics: list[Diagnostic]) -> None:
    if diagnostics:
        click.echo(render_all(diagnostics), err=True)


def summary(topology: Topology) -> str:
    topics = sum(len(event.topics) for event in topology.events)
    return (f"{len(topology.events)} event types, {len(topology.chains)} chains, {topics} topics, "
            f"{len(topology.groups)} consumer groups, broker {topology.broker.value}")


@click.command()
@FILE_ARGUMENT
def validate(file: Path) -> None:
    """Check FILE (default topology.yaml) and report every error with its line and column."""
    topology, diagnostics = load(file)
    report(diagnostics)
    if topology is None or has_errors(diagnostics):
        sys.exit(1)
    click.echo(f"{file}: valid ({summary(topology)})")


@click.command()
@FILE_ARGUMENT
@click.option("-o", "--output", "output", default="generated", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output directory (replaced as a whole).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 and list the files that would change.")
def generate(file: Path, output: Path, check: bool) -> None:
    """Compile FILE (default topology.yaml) into OUTPUT: all files, atomically, deterministically."""
    result = build(file)
    report(result.diagnostics)
    if result.files is None or has_errors(result.diagnostics):
        click.echo(f"{file}: not generated; {output} is unchanged", err=True)
        sys.exit(1)
    try:
        guard(output, file)
        if check:
            changes = compare_output(output, result.files)
            if changes:
                click.echo(f"{output} is out of date with {file} ({changes.summary()}):", err=True)
                click.echo("\n".join(changes.lines(output)), err=True)
                click.echo(f"run `topo generate {file} -o {output}` and commit the result", err=True)
                sys.exit(1)
            click.echo(f"{output} is up to date with {file} ({len(result.files)} files)")
            return
        changes = write(output, result.files)
    except (OutputError, OSError) as exc:
        click.echo(f"{output}: error: {exc}", err=True)
        sys.exit(1)
    state = changes.summary() if changes else "already up to date"
    click.echo(f"{output}: {len(result.files)} files, {state}")
