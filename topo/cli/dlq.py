"""`topo dlq list` and `topo dlq replay`: a consumer group's dead letters.

`list` shows the letters not replayed yet (what `topo lag` counts as dead letters); `--all` adds
the replayed ones, each with `replayed_at`. On RabbitMQ replayed letters leave the queue.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from topo.cli.options import CliError, group_option, json_option
from topo.cli.runtime import delivery_json, open_runtime, probe_broker, runtime_options
from topo.cli.source import load, pick_group
from topo.core import headers as H
from topo.core.durations import parse_duration
from topo.core.model import ConsumerGroup
from topo.runtime.cloudevents import CloudEventsReader, is_cloudevent
from topo.runtime.transport.base import Delivery, ReplayRecord, Unsupported, replay_topic


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
    cloudevents = CloudEventsReader(topology)
    entries = [listed_json(letter, record, cloudevents) for letter in letters]
    if as_json:
        click.echo(json.dumps({"group": group_name, "count": len(entries), "replayed_count": record.count,
                               "all": show_all, "dead_letters": entries}, indent=2, sort_keys=True))
    else:
        for entry in entries:
            click.echo(json.dumps(entry, sort_keys=True))
    if not entries:
        click.echo(empty_summary(group_name, record, show_all), err=True)


def listed_json(letter: Delivery, record: ReplayRecord, cloudevents: CloudEventsReader | None = None
                ) -> dict[str, Any]:
    replayed_at = record.replayed_at(letter)
    return {**delivery_json(letter, cloudevents), "replayed": replayed_at is not None,
            "replayed_at": replayed_at or None}


def empty_summary(group_name: str, record: ReplayRecord, show_all: bool) -> str:
    if record.count and not show_all:
        return f"no dead letters for group {group_name} ({record.count} replayed; --all to show them)"
    return f"no dead letters for group {group_name}"


def letter_event_id(letter: Delivery, cloudevents: CloudEventsReader) -> str | None:
    """The event id a dead letter carries (its envelope's `event_id`, also for a CloudEvent), or None if
    unreadable."""
    if letter.headers and is_cloudevent(letter.headers):
        return cloudevents.event_id(letter)
    try:
        event_id = json.loads(letter.body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) else None


def dead_lettered_at(letter: Delivery) -> datetime | None:
    """When the letter failed last (x-topo-last-failure), else the broker's timestamp."""
    stamp = letter.headers.get(H.LAST_FAILURE)
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return datetime.fromtimestamp(letter.timestamp, UTC) if letter.timestamp else None


def since_time(value: str | None) -> datetime | None:
    """`--since`: a duration back from now (`1h`, `30m`) or an RFC 3339 time."""
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--since {value!r}: write a duration back from now (e.g. 30m, 2h, 7d) or an RFC 3339 "
                       "time (e.g. 2026-12-02T18:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def selected(letter: Delivery, event_ids: frozenset[str], since: datetime | None,
             cloudevents: CloudEventsReader) -> bool:
    if event_ids and letter_event_id(letter, cloudevents) not in event_ids:
        return False
    if since is not None:
        moment = dead_lettered_at(letter)
        return moment is not None and moment >= since
    return True


def replay_headers(letter: Delivery, stamp: str, *, per_group: bool) -> dict[str, str]:
    """The replayed copy's headers: the letter's own (trace context and x-topo-key included) minus its
    failure history; a per-group copy keeps x-topo-original-topic, which routes it on the group's path."""
    dropped = set(H.FAILURE_HEADERS) | {H.GROUP}
    if not per_group:
        dropped |= {H.ORIGINAL_TOPIC, H.ORIGINAL_PARTITION, H.ORIGINAL_OFFSET}
    kept = {k: v for k, v in letter.headers.items() if k not in dropped}
    kept[H.REPLAYED_AT] = stamp
    kept[H.REPLAYED_FROM] = letter.source
    return kept


def replayed_json(letter: Delivery, original: str, destination: str, cloudevents: CloudEventsReader
                  ) -> dict[str, Any]:
    return {"event_id": letter_event_id(letter, cloudevents), "from": letter.source, "partition": letter.partition,
            "offset": letter.offset, "topic": original, "to": destination, "key": letter.key}


@dlq.command("replay")
@group_option()
@click.option("--event-id", "event_ids", multiple=True, metavar="ID",
              help="Only the dead letters of this event (repeatable).")
@click.option("--since", metavar="WHEN",
              help="Only letters dead-lettered since WHEN: a duration back from now (30m, 2h, 7d) or an RFC 3339 time.")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; send and record nothing.")
@click.option("--all-groups", is_flag=True,
              help="Re-publish to the original topic, so every subscribed group receives it again.")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@runtime_options
@json_option
def dlq_replay(group_name: str, event_ids: tuple[str, ...], since: str | None, dry_run: bool, all_groups: bool,
               limit: int, timeout: float, topology_path: Path, generated_dir: Path | None, broker: str | None,
               as_json: bool) -> None:
    """Re-deliver the group's dead letters not replayed before to that group alone, and record them as replayed.

    The copy goes through the group's own path (Kafka: its first retry topic, due at once; RabbitMQ:
    its own exchange, which routes the key to its work queue), so no other group subscribed to the
    event receives it. It keeps its envelope (same event_id: handlers that succeeded meanwhile dedup
    it) and its trace context, gets x-topo-replayed-at / x-topo-replayed-from, and loses its failure
    headers (the retry budget starts again). Letters not selected by --event-id / --since stay pending.
    """
    topology = load(topology_path)
    group = pick_group(topology, group_name)
    wanted, after = frozenset(event_ids), since_time(since)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    probe_broker(runtime, topology_path, group=group)
    reader = runtime.transport.open_dead_letters(group)
    producer = runtime.transport.open_publisher("dlq-replay")
    try:
        cloudevents = CloudEventsReader(topology)
        letters = [letter for letter in reader.take(limit, timeout) if selected(letter, wanted, after, cloudevents)]
        errors: list[str] = []
        replayed: list[dict[str, Any]] = []
        stamp = H.now_text()
        for letter in letters:
            original = letter.headers.get(H.ORIGINAL_TOPIC)
            if not original:
                errors.append(f"{letter.source}[{letter.partition}]@{letter.offset}: no {H.ORIGINAL_TOPIC} header")
                continue
            destination = original if all_groups else replay_destination(runtime.transport.kind, group)
            replayed.append(replayed_json(letter, original, destination, cloudevents))
            if dry_run:
                continue
            headers = replay_headers(letter, stamp, per_group=not all_groups)
            report = lambda outcome: errors.append(outcome.error) if outcome.error else None  # noqa: E731
            try:
                if all_groups:
                    producer.send(original, letter.key, letter.body, headers, report)
                else:
                    producer.redeliver(group, original, letter.key, letter.body, headers, report)
            except Unsupported as error:
                raise CliError(str(error)) from None
        if not dry_run and producer.flush(30):
            errors.append("some replayed events were not confirmed within 30s")
        if errors:
            raise CliError("replay incomplete, nothing recorded as replayed:\n" + "\n".join(errors))
        if not dry_run:
            reader.done(letters, stamp)
    finally:
        producer.close()
        reader.close()
        runtime.close()
    if as_json:
        click.echo(json.dumps({"group": group_name, "replayed": 0 if dry_run else len(replayed), "dry_run": dry_run,
                               "events": replayed}, indent=2, sort_keys=True))
    elif dry_run:
        for entry in replayed:
            click.echo(json.dumps(entry, sort_keys=True))
        click.echo(f"would replay {len(replayed)} dead letter(s) of group {group_name} (dry run: nothing sent)",
                   err=True)
    else:
        target = "every subscribed group" if all_groups else f"group {group_name} only"
        click.echo(f"replayed {len(letters)} dead letter(s) of group {group_name} to {target}")


def replay_destination(kind: str, group: ConsumerGroup) -> str:
    """Where a per-group replay goes, as `--json` and `--dry-run` name it."""
    if kind == "rabbitmq":
        return group.rabbitmq.exchange
    try:
        return replay_topic(group)
    except Unsupported as error:
        raise CliError(str(error)) from None
