"""The `topo` command. Each area owns its subcommands; they are imported only when used."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "validate": "topo.generator.cli:validate",
    "generate": "topo.generator.cli:generate",
    "plan": "topo.provision.cli:plan",
    "apply": "topo.provision.cli:apply",
    "run": "topo.runtime.cli:run",
    "publish": "topo.runtime.cli:publish",
    "tail": "topo.runtime.cli:tail",
    "dlq": "topo.runtime.cli:dlq",
    "lag": "topo.runtime.observe.cli:lag",
    "monitor": "topo.runtime.observe.cli:monitor",
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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="topo-events", prog_name="topo")
def main() -> None:
    """topo: one topology.yaml -> a whole event bus on Kafka or RabbitMQ."""
