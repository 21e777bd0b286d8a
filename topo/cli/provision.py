"""`topo plan` and `topo apply`.

Exit codes: 0 no changes (or applied), 1 error, 2 changes pending (plan), 3 changes that cannot
be made in place (apply refuses them all).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from topo.cli.options import ALL_BROKERS, CliError, broker_option, json_option, strict_option, topology_option
from topo.cli.source import check_source, load
from topo.core.interpolate import UnsetVariableError
from topo.provision.engine import Provisioner
from topo.provision.kafka import KafkaProvisionError
from topo.provision.plan import EXIT_IMPOSSIBLE, EXIT_OK, Broker, Plan
from topo.provision.rabbitmq import RabbitProvisionError
from topo.provision.render import render

F = TypeVar("F", bound=Callable[..., Any])
EXPECTED_ERRORS = (UnsetVariableError, KafkaProvisionError, RabbitProvisionError, ValueError)


class ImpossibleChanges(CliError):
    exit_code = EXIT_IMPOSSIBLE


def common_options(function: F) -> F:
    function = broker_option(multiple=True)(function)
    function = click.option("--prune", is_flag=True,
                            help="Plan (and apply) deleting what this topology owns but no longer declares.")(function)
    return topology_option()(function)


def colour_wanted() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def selected_brokers(options: tuple[str, ...], default: Broker) -> tuple[Broker, ...]:
    """Repeated --broker values (or `all`) in a stable order; none given: the topology's broker."""
    if not options:
        return (default,)
    wanted = set(Broker) if ALL_BROKERS in options else {Broker(option) for option in options}
    return tuple(broker for broker in Broker if broker in wanted)


def _prepare(topology_path: Path, brokers: tuple[str, ...], strict: bool | None = None) -> Provisioner:
    """The provisioner of the topology; `strict` (apply): check a topology.json against its YAML."""
    topology = load(topology_path)
    if strict is not None:
        check_source(topology_path, topology, strict)
    return Provisioner(topology, selected_brokers(brokers, Broker(topology.broker.value)))


@click.command()
@common_options
@json_option
def plan(topology_path: Path, brokers: tuple[str, ...], prune: bool, as_json: bool) -> None:
    """Show what `topo apply` would change on the brokers.

    Exit code: 0 no changes, 2 changes pending, 3 changes that cannot be made in place, 1 error.
    """
    try:
        result = _prepare(topology_path, brokers).plan(prune=prune)
    except EXPECTED_ERRORS as exc:
        raise CliError(str(exc)) from None
    render(result, sys.stdout, as_json=as_json, colour=colour_wanted())
    sys.exit(result.exit_code)


def outcome_json(current: Plan, status: str, applied: list[str], error: str | None = None) -> str:
    document = {"plan": current.to_json(), "status": status, "applied": applied, "error": error}
    return json.dumps(document, indent=2, sort_keys=True, default=str)


@click.command()
@common_options
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@json_option
@strict_option
def apply(topology_path: Path, brokers: tuple[str, ...], prune: bool, yes: bool, as_json: bool, strict: bool) -> None:
    """Create and update the brokers' topics, exchanges, queues and bindings to match the topology.

    Shows the plan first and asks before changing anything (unless --yes). Never deletes
    without --prune; --prune deletes only resources owned by this topology. With --json, one
    document on stdout: the plan, the status (applied, no-changes, impossible, failed) and the
    changes applied.
    """
    try:
        provisioner = _prepare(topology_path, brokers, strict)
        current: Plan = provisioner.plan(prune=prune)
    except EXPECTED_ERRORS as exc:
        raise CliError(str(exc)) from None
    if not as_json:
        render(current, sys.stdout, colour=colour_wanted())
    if current.impossible:
        if as_json:
            click.echo(outcome_json(current, "impossible", []))
        raise ImpossibleChanges(f"{len(current.impossible)} change(s) cannot be made in place (see the procedures "
                       f"{'in the plan' if as_json else 'above'}); nothing was applied")
    if not current.actionable:
        click.echo(outcome_json(current, "no-changes", []) if as_json else "No changes to apply.")
        sys.exit(EXIT_OK)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to apply without confirmation: stdin is not a terminal; pass --yes to apply "
                           "anyway")
        if not click.confirm(f"Apply {len(current.actionable)} change(s) to topology {current.topology}?",
                             err=as_json):
            raise CliError("cancelled; nothing was applied")
    applied: list[str] = []

    def applied_line(line: str) -> None:
        applied.append(line)
        if not as_json:
            click.echo(f"  {line}")

    try:
        provisioner.apply(current, applied_line)
    except EXPECTED_ERRORS as exc:
        message = f"{exc} (changes listed above were applied; run `topo plan` to see what remains)"
        if as_json:
            click.echo(outcome_json(current, "failed", applied, str(exc)))
        raise CliError(message) from None
    click.echo(outcome_json(current, "applied", applied) if as_json
               else f"Applied {len(current.actionable)} change(s).")
    sys.exit(EXIT_OK)
