"""`topo dlq list` and `topo dlq replay`: a consumer group's dead letters.

`list` shows the letters not replayed yet (what `topo lag` counts as dead letters); `--all` adds
the replayed ones, each with `replayed_at`. On RabbitMQ replayed letters leave the queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from topo.cli.options import CliError, group_option, json_option
from topo.cli.runtime import delivery_json, open_runtime, probe_broker, runtime_options
from topo.cli.source import load, pick_group
from topo.core import headers as H
from topo.runtime.transport.base import Delivery, ReplayRecord


@click.group()
def dlq() -> None:
    """Inspect and replay a group's dead-letter queue."""


@dlq.command("list")
@group_option()
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@click.option("--all", "show_all", is_flag=True,
              help="Also list dead letters replayed already (Kafka keeps them; replayed_at says when).")
@runtime_options
@json_option
def dlq_list(group_name: str, limit: int, timeout: float, show_all: bool, topology_path: Path,
             generated_dir: Path | None, broker: str | None, as_json: bool) -> None:
    """Print the group's dead letters not replayed yet (oldest first) with their failure headers,
    one JSON per line (with --json: one document holding the list and `replayed_count`, the
    replayed letters still kept). Each carries `replayed` and `replayed_at` (when `topo dlq
    replay` re-published it; null if not replayed or too long ago to be remembered). An empty
    list prints a one-line summary on stderr."""
    topology = load(topology_path)
    group = pick_group(topology, group_name)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    probe_broker(runtime, topology_path, group=group)
    try:
        reader = runtime.transport.open_dead_letters(group)
    except BaseException:
        runtime.close()
        raise
    try:
        letters = reader.browse(limit, timeout, replayed=show_all)
        record = reader.replay_record()
    finally:
        reader.close()
        runtime.close()
    entries = [listed_json(letter, record) for letter in letters]
    if as_json:
        click.echo(json.dumps({"group": group_name, "count": len(entries), "replayed_count": record.count,
                               "all": show_all, "dead_letters": entries}, indent=2, sort_keys=True))
    else:
        for entry in entries:
            click.echo(json.dumps(entry, sort_keys=True))
    if not entries:
        click.echo(empty_summary(group_name, record, show_all), err=True)


def listed_json(letter: Delivery, record: ReplayRecord) -> dict[str, Any]:
    replayed_at = record.replayed_at(letter)
    return {**delivery_json(letter), "replayed": replayed_at is not None, "replayed_at": replayed_at or None}


def empty_summary(group_name: str, record: ReplayRecord, show_all: bool) -> str:
    if record.count and not show_all:
        return f"no dead letters for group {group_name} ({record.count} replayed; --all to show them)"
    return f"no dead letters for group {group_name}"


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
    probe_broker(runtime, topology_path, group=group)
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
        reader.done(letters, stamp)
    finally:
        producer.close()
        reader.close()
        runtime.close()
    if as_json:
        click.echo(json.dumps({"group": group_name, "replayed": len(replayed), "events": replayed},
                              indent=2, sort_keys=True))
    else:
        click.echo(f"replayed {len(letters)} dead letter(s) of group {group_name}")
