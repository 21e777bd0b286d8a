"""A small topology written as YAML, and the CLI invoked in-process with stdout and stderr apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from topo.cli import main


def small_doc(name: str, groups: tuple[str, ...] = ("indexer", "websocket")) -> dict[str, Any]:
    """One chain, two events, the given groups (every group subscribes to both events, no retries)."""
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": "kafka", "rabbitmq": {"exchange": f"{name}.events", "partitions": 2}},
        "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "chains": {1: {"name": "ethereum"}},
        "events": {
            "block.new": {"producers": ["indexer"], "key": "chain_id", "ordered": True,
                          "payload": {"block_number": "integer"}},
            "token.transfer": {"producers": ["indexer"], "key": "token", "ordered": False,
                               "payload": {"token": "string"}},
        },
        "consumer_groups": {group: {"subscribes": ["block.new", "token.transfer"], "retry": {"max_retries": 0}}
                            for group in groups},
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def topo(*arguments: str | Path) -> Result:
    """`topo ARGUMENTS` in this process; `result.stdout` and `result.stderr` are apart."""
    return CliRunner().invoke(main, [str(a) for a in arguments], catch_exceptions=False)


def generated(yaml_file: Path, out: Path) -> Path:
    """`topo generate -t YAML -o OUT`; returns OUT."""
    result = topo("generate", "-t", yaml_file, "-o", out)
    assert result.exit_code == 0, result.output
    return out
