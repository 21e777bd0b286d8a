"""The options every `topo` command shares, declared once, and the one error style.

    -t/--topology FILE   a topology.yaml or a compiled topology.json (see `default_topology`)
    --broker NAME        kafka | rabbitmq
    --group NAME         a consumer group of the topology (unknown names get a did-you-mean hint)
    --json               machine-readable output on stdout

Errors print `error: MESSAGE` on stderr and exit non-zero. This module imports click only, so
every command (including `topo validate`) can use it without loading a broker client.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

ENV_TOPOLOGY = "TOPO_TOPOLOGY"
SOURCE = Path("topology.yaml")
COMPILED = Path("generated/topology.json")
BROKERS = ("kafka", "rabbitmq")
ALL_BROKERS = "all"  # plan/apply only: both brokers (kept for compatibility with `--broker all`)

TOPOLOGY_HELP = (f"topology.yaml (validated and compiled in memory) or a compiled topology.json. Default: "
                 f"${ENV_TOPOLOGY}, else ./{SOURCE} if it exists, else {COMPILED}.")

SOURCE_HELP = f"The topology.yaml (also accepted as the argument FILE). Default: ${ENV_TOPOLOGY}, else ./{SOURCE}."


class CliError(click.ClickException):
    """Printed as `error: MESSAGE` on stderr; exits with `exit_code` (a subclass sets another one)."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def default_topology() -> Path:
    """`$TOPO_TOPOLOGY` if set, else ./topology.yaml if it exists, else generated/topology.json."""
    configured = os.environ.get(ENV_TOPOLOGY)
    if configured:
        return Path(configured)
    return SOURCE if SOURCE.is_file() else COMPILED


def _with_default(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    return value if value is not None else default_topology()


def topology_option(resolve: bool = True) -> Callable[[F], F]:
    """`-t/--topology FILE` as `topology_path`; with resolve=False a missing option stays None
    (validate/generate read the YAML source, also given as a positional argument)."""
    return click.option("-t", "--topology", "topology_path", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, callback=_with_default if resolve else None, metavar="FILE",
                        help=TOPOLOGY_HELP if resolve else SOURCE_HELP)


def broker_option(multiple: bool = False, default_help: str = "the topology's broker.kind") -> Callable[[F], F]:
    """`--broker kafka|rabbitmq` as `broker`; with multiple=True (plan/apply) a tuple `brokers`,
    repeatable, `all` accepted."""
    if multiple:
        return click.option("--broker", "brokers", type=click.Choice([*BROKERS, ALL_BROKERS]), multiple=True,
                            help=f"Broker to act on (repeatable; `all`: both). Default: {default_help}.")
    return click.option("--broker", "broker", type=click.Choice(BROKERS), default=None,
                        help=f"Broker to use. Default: {default_help}.")


def group_option(multiple: bool = False) -> Callable[[F], F]:
    """`--group NAME`: required and single as `group_name`, or optional and repeatable as `groups`."""
    if multiple:
        return click.option("-g", "--group", "groups", multiple=True, metavar="NAME",
                            help="Only this consumer group (repeatable). Default: every group.")
    return click.option("-g", "--group", "group_name", required=True, metavar="NAME",
                        help="Consumer group (from the topology).")


def generated_option() -> Callable[[F], F]:
    """`--generated DIR`: where the generated event classes are (runtime commands)."""
    return click.option("--generated", "generated_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, metavar="DIR",
                        help="Output of `topo generate` holding python/<module>.py. Default: the folder of a "
                             "topology.json, or generated/ beside a topology.yaml.")


strict_option: Callable[[F], F] = click.option(
    "--strict", is_flag=True,
    help="Refuse a compiled topology.json whose topology.yaml changed since `topo generate` (default: warn).")

json_option: Callable[[F], F] = click.option("--json", "as_json", is_flag=True,
                                             help="Print JSON on stdout instead of text.")


def unknown_name(kind: str, name: str, valid: Sequence[str]) -> CliError:
    """One error for an unknown group or event name, with the closest valid names as a hint."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return CliError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(sorted(valid)) or 'none'})")
