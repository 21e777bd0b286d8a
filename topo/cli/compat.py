"""`topo diff`: what changing the topology does to producers, consumers and brokers.

    topo diff OLD NEW                  two files (topology.yaml or compiled topology.json)
    topo diff --against REF [FILE]     FILE (default as -t) as it is now against FILE at git commit REF

Exit 0 when every change is safe, 2 when some need care, 3 when some break, 1 on an error
(the rule table: docs/compatibility.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pydantic

from topo.cli.gitref import read_at
from topo.cli.options import EXIT_OK, CliError, default_topology, json_option
from topo.cli.source import first_problem, is_compiled
from topo.cli.source import load as load_file
from topo.core.model import Topology
from topo.generator.compat.report import compare
from topo.generator.diagnostics import TopologyError
from topo.generator.load import load_text


def load_at(ref: str, file: Path) -> Topology:
    """`file` as commit `ref` has it, compiled in memory like the file itself would be."""
    text = read_at(ref, file)
    label = f"{ref}:{file}"
    if is_compiled(file):
        try:
            return Topology.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise CliError(f"{label}: not a compiled topology ({exc.error_count()} error(s)); compare the "
                           "topology.yaml instead") from None
    topology, diagnostics = load_text(text, label)
    if topology is None:
        raise CliError(first_problem(Path(label), TopologyError(diagnostics)).replace(
            f"run `topo validate -t {label}`", f"check out {ref} and run `topo validate`"))
    return topology


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path), metavar="[OLD] NEW")
@click.option("--against", "ref", metavar="REF",
              help="Compare FILE with itself at this git commit, branch or tag (then give at most one FILE).")
@click.option("-t", "--topology", "topology_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="The FILE of --against. Default: $TOPO_TOPOLOGY, else ./topology.yaml if it "
                                   "exists, else generated/topology.json.")
@json_option
def diff(files: tuple[Path, ...], ref: str | None, topology_path: Path | None, as_json: bool) -> int:
    """Classify every change from OLD to NEW (or from FILE at --against REF to FILE) as safe, needs-care or
    breaking, for producers, consumers and brokers. Exit 0: all safe; 2: some need care; 3: some break."""
    if ref is not None:
        if len(files) > 1 or (files and topology_path is not None and files[0] != topology_path):
            raise CliError("--against REF compares one file with its past: give at most one FILE (or -t FILE)")
        file = files[0] if files else topology_path or default_topology()
        new = load_file(file)
        old = load_at(ref, file)
        labels = (f"{ref}:{file}", str(file))
    else:
        if len(files) != 2 or topology_path is not None:
            raise CliError("give two files, `topo diff OLD NEW`, or one file and a git commit, "
                           "`topo diff --against REF [FILE]`")
        old, new = load_file(files[0]), load_file(files[1])
        labels = (str(files[0]), str(files[1]))
    report = compare(old, new)
    if as_json:
        click.echo(json.dumps({"old": labels[0], "new": labels[1], **report.to_json()}, indent=2))
    else:
        click.echo(f"{labels[0]} -> {labels[1]}: {report.summary()}")
        for line in report.lines():
            click.echo(line)
    return report.exit_code if report.changes else EXIT_OK
