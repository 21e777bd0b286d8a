"""Plan output: a coloured table on a terminal, plain lines otherwise, JSON for machines."""

from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from topo.provision.plan import Action, Change, Plan

STYLES = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.DRIFT: "magenta",
    Action.IMPOSSIBLE: "bold red",
}


def details(change: Change) -> list[str]:
    lines = [change.reason]
    lines += [f"  {difference.describe()}" for difference in change.differences]
    if change.procedure:
        lines.append(f"  procedure: {change.procedure}")
    return lines


def targets_line(plan: Plan) -> str:
    parts = [f"{broker}: " + ", ".join(f"{key} {value}" for key, value in sorted(target.items()))
             for broker, target in sorted(plan.targets.items())]
    return f"Topology {plan.topology}; " + "; ".join(parts)


def render_plain(plan: Plan, out: IO[str]) -> None:
    out.write(targets_line(plan) + "\n")
    for change in plan.changes:
        out.write(f"{change.action.value:<10} {change.broker.value} {change.kind} {change.name}\n")
        for line in details(change):
            out.write(f"           {line}\n")
    out.write(plan.summary() + "\n")


def render_rich(plan: Plan, out: IO[str]) -> None:
    console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=False)
    console.print(targets_line(plan), style="dim")
    if plan.changes:
        table = Table(show_lines=False, header_style="bold")
        for column in ("action", "broker", "kind", "name", "details"):
            table.add_column(column, overflow="fold")
        for change in plan.changes:
            style = STYLES[change.action]
            table.add_row(Text(change.action.value, style=style), change.broker.value, change.kind, change.name,
                          "\n".join(details(change)))
        console.print(table)
    console.print(plan.summary(), style="bold")


def render_json(plan: Plan, out: IO[str]) -> None:
    out.write(json.dumps(plan.to_json(), indent=2, sort_keys=True, default=str) + "\n")


def render(plan: Plan, out: IO[str], *, as_json: bool = False, colour: bool = False) -> None:
    if as_json:
        render_json(plan, out)
    elif colour:
        render_rich(plan, out)
    else:
        render_plain(plan, out)
