"""`topo plan` and `topo apply`.

Exit codes: 0 no changes (or applied), 1 error, 2 changes pending (plan), 3 changes that cannot
be made in place (apply refuses them all).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from topo.cli.source import DEFAULT_TOPOLOGY, TopologySourceError, load
from topo.core.interpolate import UnsetVariableError
from topo.generator.diagnostics import TopologyError
from topo.provision.engine import Provisioner, brokers_from_option
from topo.provision.kafka import KafkaProvisionError
from topo.provision.plan import EXIT_ERROR, EXIT_IMPOSSIBLE, EXIT_OK, Plan
from topo.provision.rabbitmq import RabbitProvisionError
from topo.provision.render import render

F = TypeVar("F", bound=Callable[..., Any])
EXPECTED_ERRORS = (TopologySourceError, TopologyError, UnsetVariableError, KafkaProvisionError, RabbitProvisionError,
                   ValueError)


def common_options(function: F) -> F:
    function = click.option("--broker", "broker", type=click.Choice(["kafka", "rabbitmq", "all"]), default=None,
                            help="Broker(s) to provision [default: the topology's broker.kind].")(function)
    function = click.option("--prune", is_flag=True,
                            help="Plan (and apply) deleting what this topology owns but no longer declares.")(function)
    function = click.option("-t", "--topology", "topology_path", default=DEFAULT_TOPOLOGY, show_default=True,
                            metavar="FILE", help="Compiled topology.json or a topology.yaml.")(function)
    return function


def colour_wanted() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _prepare(topology_path: str, broker: str | None) -> Provisioner:
    topology = load(topology_path)
    return Provisioner(topology, brokers_from_option(broker or "default", topology))


@click.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan (format topo-plan/1).")
def plan(topology_path: str, broker: str | None, prune: bool, as_json: bool) -> None:
    """Show what `topo apply` would change on the brokers.

    Exit code: 0 no changes, 2 changes pending, 3 changes that cannot be made in place, 1 error.
    """
    try:
        result = _prepare(topology_path, broker).plan(prune=prune)
    except EXPECTED_ERRORS as exc:
        fail(str(exc))
        return
    render(result, sys.stdout, as_json=as_json, colour=colour_wanted())
    sys.exit(result.exit_code)


@click.command()
@common_options
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
def apply(topology_path: str, broker: str | None, prune: bool, yes: bool) -> None:
    """Create and update the brokers' topics, exchanges, queues and bindings to match the topology.

    Shows the plan first and asks before changing anything (unless --yes). Never deletes
    without --prune; --prune deletes only resources owned by this topology.
    """
    try:
        provisioner = _prepare(topology_path, broker)
        current: Plan = provisioner.plan(prune=prune)
    except EXPECTED_ERRORS as exc:
        fail(str(exc))
        return
    render(current, sys.stdout, colour=colour_wanted())
    if current.impossible:
        click.echo(f"error: {len(current.impossible)} change(s) cannot be made in place (see the procedures "
                   "above); nothing was applied", err=True)
        sys.exit(EXIT_IMPOSSIBLE)
    if not current.actionable:
        click.echo("No changes to apply.")
        sys.exit(EXIT_OK)
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to apply without confirmation: stdin is not a terminal; pass --yes to apply anyway")
        if not click.confirm(f"Apply {len(current.actionable)} change(s) to topology {current.topology}?"):
            fail("cancelled; nothing was applied")
    try:
        provisioner.apply(current, lambda line: click.echo(f"  {line}"))
    except EXPECTED_ERRORS as exc:
        fail(f"{exc} (changes listed above were applied; run `topo plan` to see what remains)")
    click.echo(f"Applied {len(current.actionable)} change(s).")
    sys.exit(EXIT_OK)
