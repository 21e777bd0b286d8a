"""`topo dlq list` and `topo dlq replay`: a consumer group's dead letters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from topo.cli.options import CliError, group_option, json_option
from topo.cli.runtime import delivery_json, open_runtime, render, runtime_options
from topo.cli.source import load, pick_group
from topo.core import headers as H
from topo.runtime.transport.base import Delivery


@click.group()
def dlq() -> None:
    """Inspect and replay a group's dead-letter queue."""


@dlq.command("list")
@group_option()
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@runtime_options
@json_option
def dlq_list(group_name: str, limit: int, timeout: float, topology_path: Path, generated_dir: Path | None,
             broker: str | None, as_json: bool) -> None:
    """Print the group's dead letters (oldest first) with their failure headers, one JSON per line
    (with --json: one document holding the list)."""
    topology = load(topology_path)
    group = pick_group(topology, group_name)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    try:
        reader = runtime.transport.open_dead_letters(group)
    except BaseException:
        runtime.close()
        raise
    try:
        letters = reader.browse(limit, timeout)
    finally:
        reader.close()
        runtime.close()
    if as_json:
        click.echo(json.dumps({"group": group_name, "count": len(letters),
                               "dead_letters": [delivery_json(letter) for letter in letters]},
                              indent=2, sort_keys=True))
        return
    for letter in letters:
        click.echo(render(letter, raw=False))


def replayed_json(letter: Delivery, destination: str) -> dict[str, Any]:
    try:
        event_id = json.loads(letter.body).get("event_id")
    except (ValueError, AttributeError):
        event_id = None
    return {"event_id": event_id, "from": letter.source, "partition": letter.partition, "offset": letter.offset,
            "to": destination, "key": letter.key}


@dlq.command("replay")
@group_option()
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@runtime_options
@json_option
def dlq_replay(group_name: str, limit: int, timeout: float, topology_path: Path, generated_dir: Path | None,
               broker: str | None, as_json: bool) -> None:
    """Re-publish dead letters not replayed before to their original topic, and record them as replayed.

    The copy keeps its envelope (same event_id: handlers that succeeded meanwhile dedup it) and
    gets x-topo-replayed-at / x-topo-replayed-from headers; its failure headers are dropped.
    Every subscribed group receives it again, as it did the original event.
    """
    topology = load(topology_path)
    group = pick_group(topology, group_name)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    reader = runtime.transport.open_dead_letters(group)
    producer = runtime.transport.open_publisher("dlq-replay")
    try:
        letters = reader.take(limit, timeout)
        errors: list[str] = []
        replayed: list[dict[str, Any]] = []
        stamp = H.now_text()
        for letter in letters:
            original = letter.headers.get(H.ORIGINAL_TOPIC)
            if not original:
                errors.append(f"{letter.source}[{letter.partition}]@{letter.offset}: no {H.ORIGINAL_TOPIC} header")
                continue
            kept = {k: v for k, v in letter.headers.items()
                    if k not in H.FAILURE_HEADERS and k not in (H.ORIGINAL_TOPIC, H.ORIGINAL_PARTITION,
                                                                 H.ORIGINAL_OFFSET, H.GROUP)}
            kept[H.REPLAYED_AT] = stamp
            kept[H.REPLAYED_FROM] = letter.source
            producer.send(original, letter.key, letter.body, kept,
                          lambda report: errors.append(report.error) if report.error else None)
            replayed.append(replayed_json(letter, original))
        if producer.flush(30):
            errors.append("some replayed events were not confirmed within 30s")
        if errors:
            raise CliError("replay incomplete, nothing recorded as replayed:\n" + "\n".join(errors))
        reader.done(letters)
    finally:
        producer.close()
        reader.close()
        runtime.close()
    if as_json:
        click.echo(json.dumps({"group": group_name, "replayed": len(replayed), "events": replayed},
                              indent=2, sort_keys=True))
    else:
        click.echo(f"replayed {len(letters)} dead letter(s) of group {group_name}")
