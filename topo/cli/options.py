"""The options every `topo` command shares, declared once, and the one error style.

    -t/--topology FILE   a topology.yaml or a compiled topology.json (see `default_topology`)
    --broker NAME        kafka | rabbitmq
    --group NAME         a consumer group of the topology (unknown names get a did-you-mean hint)
    --json               machine-readable output on stdout

Errors print one line, `error: MESSAGE`, on stderr (a syntax error in user code prints
`FILE:LINE:COL: syntax error: ...` like a compiler) and exit with a code of the table below
(docs/cli.md). `command_line` is the edge every command runs behind: usage mistakes, CliErrors and
Ctrl-C become one line and an exit code, and an unexpected exception one line asking for a bug report
(its traceback shows with TOPO_DEBUG=1 or `--log-level debug`). This module imports click only, so
every command (including `topo validate`) can use it without loading a broker client.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

ENV_TOPOLOGY = "TOPO_TOPOLOGY"
ENV_DEBUG = "TOPO_DEBUG"

# Exit codes, the same for every command (docs/cli.md); plan/apply's 2 and 3 are topo.provision.plan's.
EXIT_OK = 0
EXIT_ERROR = 1  # any error, including every user mistake (option, file, name, payload, handler, port)
EXIT_CHANGES = 2  # `topo plan`: changes pending
EXIT_IMPOSSIBLE = 3  # `topo plan` / `topo apply`: changes that cannot be made in place
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT) outside `topo run`, which drains and exits 0
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


class LocatedError(CliError):
    """A message that starts with its place, `FILE:LINE:COL: syntax error: ...`: printed as it is."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), err=True)


class ErrorLines(CliError):
    """Several problems of one input (e.g. one per payload field): one `error: ` line each."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)

    def show(self, file: IO[Any] | None = None) -> None:
        for line in self.lines:
            click.echo(f"error: {line}", err=True)


def debugging() -> bool:
    """TOPO_DEBUG=1, or a command configured DEBUG logging (`topo run --log-level debug`)."""
    return os.environ.get(ENV_DEBUG, "") not in ("", "0") or logging.getLogger().isEnabledFor(logging.DEBUG)


def command_line(invoke: Callable[[], Any]) -> NoReturn:
    """Run a click command in non-standalone mode and turn its outcome into one stderr line and an exit code."""
    try:
        outcome = invoke()
    except click.UsageError as error:  # click's own exit code is 2, which `topo plan` uses for "changes pending"
        where = f" (see `{error.ctx.command_path} --help`)" if error.ctx is not None else ""
        click.echo(f"error: {error.format_message()}{where}", err=True)
        sys.exit(EXIT_ERROR)
    except CliError as error:
        error.show()
        sys.exit(error.exit_code)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if debugging():
            raise
        click.echo(f"error: unexpected {type(error).__name__}: {error}; this is a bug in topo: rerun with "
                   f"{ENV_DEBUG}=1 for the traceback and report it", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(outcome if isinstance(outcome, int) else EXIT_OK)


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
