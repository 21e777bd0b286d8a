"""The `topo` command. Each area owns its subcommands; they are imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import click

from topo.cli.options import command_line

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "validate": "topo.cli.generate:validate",
    "generate": "topo.cli.generate:generate",
    "diff": "topo.cli.compat:diff",
    "plan": "topo.cli.provision:plan",
    "apply": "topo.cli.provision:apply",
    "run": "topo.cli.runtime:run",
    "publish": "topo.cli.runtime:publish",
    "tail": "topo.cli.runtime:tail",
    "dlq": "topo.cli.dlq:dlq",
    "lag": "topo.cli.observe:lag",
    "monitor": "topo.cli.observe:monitor",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module on first use, so `topo validate` never loads broker clients."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        """Standalone (the console script, click's test runner): behind `command_line`, the one error style."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args=windows_expand_args, **extra)
        command_line(lambda: super(LazyGroup, self).main(args, prog_name, complete_var, False,
                                                         windows_expand_args=windows_expand_args, **extra))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="topo-events", prog_name="topo")
def main() -> None:
    """topo: one topology.yaml -> a whole event bus on Kafka or RabbitMQ."""
