"""`topo run`, `topo publish`, `topo tail`, `topo dlq`: the runtime's commands."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from topo.core import headers as H
from topo.runtime.app import Runtime
from topo.runtime.events import DEFAULT_TOPOLOGY
from topo.runtime.process import tune_garbage_collector
from topo.runtime.publisher import PublishError
from topo.runtime.transport import TRANSPORTS
from topo.runtime.transport.base import Delivery

topology_option = click.option("--topology", "topology_path", type=click.Path(dir_okay=False, path_type=Path),
                               default=DEFAULT_TOPOLOGY, show_default=True,
                               help="Compiled topology (its folder also holds python/<module>.py).")
broker_option = click.option("--broker", type=click.Choice(sorted(TRANSPORTS)), default=None,
                             help="Broker to use; default: TOPO_BROKER, else the topology's broker.kind.")


def open_runtime(topology_path: Path, broker: str | None, producer: str = "", metrics: Any = None) -> Runtime:
    try:
        return Runtime.from_generated(topology_path.parent, broker=broker, producer=producer, metrics=metrics)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.option("--group", "group_name", required=True, help="Consumer group to run (from the topology).")
@topology_option
@broker_option
@click.option("--concurrency", type=click.IntRange(0, 1024), default=8, show_default=True,
              help="Worker threads running handlers (events with one key always run one at a time); "
                   "0 runs handlers on the consume thread: fastest for quick CPU-bound handlers.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds in-flight handlers get to finish on SIGTERM/SIGINT or a rebalance.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz and /readyz on this port (0: any free port).")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE first (repeatable): handlers it registers with a Runtime decorator apply.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of SQLite dedup stores without an explicit path (default: TOPO_STATE_DIR or .topo-state).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--gc-tuning/--no-gc-tuning", default=True, show_default=True,
              help="Freeze start-up objects and collect cycles every 20,000 allocations instead of 700 "
                   "(topo.runtime.process).")
def run(group_name: str, topology_path: Path, broker: str | None, concurrency: int, shutdown_timeout: float,
        metrics_port: int | None, imports: tuple[str, ...], state_dir: Path | None, log_level: str,
        gc_tuning: bool) -> None:
    """Run a consumer group's handlers until SIGTERM/SIGINT, then drain and exit."""
    import importlib

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from topo.runtime.metrics import RuntimeMetrics

    runtime = open_runtime(topology_path, broker)
    runtime.state_dir = state_dir
    for module in imports:
        importlib.import_module(module)
    metrics = state = server = None
    if metrics_port is not None:
        from topo.runtime.observe.health import RuntimeState
        from topo.runtime.observe.server import serve_runtime

        metrics = runtime.metrics = RuntimeMetrics(runtime.topology)
        state = RuntimeState([group_name])
        server = serve_runtime(metrics, state, port=metrics_port)
        click.echo(f"metrics on :{server.port}", err=True)
    try:
        runner = runtime.runner(group_name, concurrency=concurrency, shutdown_timeout=shutdown_timeout, state=state,
                                client_id=str(__import__("os").getpid()))
    except (KeyError, LookupError) as error:
        raise click.ClickException(str(error).strip("'\"")) from None
    register_signals(runner.stop)
    if gc_tuning:
        tune_garbage_collector()
    try:
        runner.run()
    finally:
        runtime.close()
        if server is not None:
            server.stop()


def register_signals(stop: Any) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("topo.runtime").info("signal %d: draining (send it again to exit at once)", signum)
        signal.signal(signum, signal.SIG_DFL)  # a second signal is not ignored
        stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


@click.command()
@click.argument("event")
@click.option("--chain", "chain_id", type=int, default=None, help="Chain id (default: the payload's chain_id).")
@click.option("--payload", "payload_text", required=True, help="Payload as JSON ('-' reads standard input).")
@click.option("--producer", default="", help="metadata.producer (default: the event's first producer).")
@topology_option
@broker_option
def publish(event: str, chain_id: int | None, payload_text: str, producer: str, topology_path: Path,
            broker: str | None) -> None:
    """Publish one EVENT, validated against the topology, and wait for the broker's confirmation."""
    runtime = open_runtime(topology_path, broker)
    try:
        declared = runtime.topology.event(event)
    except KeyError as error:
        raise click.ClickException(str(error).strip("'\"")) from None
    runtime.producer = producer or (declared.producers[0] if declared.producers else runtime.producer)
    try:
        payload = json.loads(sys.stdin.read() if payload_text == "-" else payload_text)
    except json.JSONDecodeError as error:
        raise click.ClickException(f"--payload is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise click.ClickException("--payload must be a JSON object")
    if chain_id is not None:
        payload.setdefault("chain_id", chain_id)
    outcome: list[str | None] = []
    try:
        sent = runtime.publisher().publish(payload, chain_id, event_type=event,
                                           on_delivery=lambda report: outcome.append(report.error))
        runtime.publisher().flush(30)
    except PublishError as error:
        raise click.ClickException(str(error)) from None
    finally:
        runtime.close()
    if not outcome or outcome[0] is not None:
        raise click.ClickException(f"not confirmed by the broker: {outcome[0] if outcome else 'timed out'}")
    click.echo(json.dumps({"event_id": str(sent.event_id), "topic": sent.topic.topic, "key": sent.key}))


def render(delivery: Delivery, raw: bool) -> str:
    try:
        document = json.loads(delivery.body)
    except ValueError:
        document = {"undecodable": delivery.body.decode("utf-8", "replace")}
    if raw:
        return json.dumps(document, sort_keys=True)
    entry = {"topic": delivery.topic, "partition": delivery.partition, "offset": delivery.offset, "key": delivery.key,
             "event": document}
    if delivery.headers:
        entry["headers"] = dict(sorted(delivery.headers.items()))
    return json.dumps(entry, sort_keys=True)


@click.command()
@click.argument("events", nargs=-1, required=True)
@click.option("--chain", "chains", type=int, multiple=True, help="Only these chains (repeatable).")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained event, not at new ones.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Exit after this many events.")
@click.option("--timeout", type=click.FloatRange(0), default=None, help="Exit after this many seconds.")
@click.option("--raw", is_flag=True, help="Print only the envelopes.")
@topology_option
@broker_option
def tail(events: tuple[str, ...], chains: tuple[int, ...], from_beginning: bool, limit: int | None,
         timeout: float | None, raw: bool, topology_path: Path, broker: str | None) -> None:
    """Print EVENTS as they arrive (one JSON per line), without touching any group's offsets."""
    runtime = open_runtime(topology_path, broker)
    try:
        topics = [t for name in events for t in runtime.topology.event(name).topics
                  if not chains or t.chain_id in chains]
    except KeyError as error:
        raise click.ClickException(str(error).strip("'\"")) from None
    if not topics:
        raise click.ClickException(f"no topic of {', '.join(events)} on chain(s) {', '.join(map(str, chains))}")
    reader = runtime.transport.open_tail(topics, from_beginning)
    stop = threading.Event()
    register_signals(stop.set)

    class Quiet:
        def on_assigned(self, streams: Any) -> None: ...
        def on_revoked(self, streams: Any) -> None: ...
        def on_lost(self, streams: Any) -> None: ...

    shown = 0
    ends = None if timeout is None else time.monotonic() + timeout
    try:
        reader.subscribe(Quiet())
        click.echo(f"tailing {len(topics)} topic(s)", err=True)  # ready: events published from now on are shown
        while not stop.is_set() and (limit is None or shown < limit) and (ends is None or time.monotonic() < ends):
            for delivery in reader.poll(100 if limit is None else min(100, limit - shown), 0.2):
                click.echo(render(delivery, raw))
                shown += 1
    finally:
        reader.close()
        runtime.close()


@click.group()
def dlq() -> None:
    """Inspect and replay a group's dead-letter queue."""


@dlq.command("list")
@click.option("--group", "group_name", required=True)
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@topology_option
@broker_option
def dlq_list(group_name: str, limit: int, timeout: float, topology_path: Path, broker: str | None) -> None:
    """Print the group's dead letters (oldest first) with their failure headers, one JSON per line."""
    runtime = open_runtime(topology_path, broker)
    try:
        reader = runtime.transport.open_dead_letters(runtime.topology.group(group_name))
    except KeyError as error:
        raise click.ClickException(str(error).strip("'\"")) from None
    try:
        for delivery in reader.browse(limit, timeout):
            click.echo(render(delivery, raw=False))
    finally:
        reader.close()
        runtime.close()


@dlq.command("replay")
@click.option("--group", "group_name", required=True)
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True)
@topology_option
@broker_option
def dlq_replay(group_name: str, limit: int, timeout: float, topology_path: Path, broker: str | None) -> None:
    """Re-publish dead letters not replayed before to their original topic, and record them as replayed.

    The copy keeps its envelope (same event_id: handlers that succeeded meanwhile dedup it) and
    gets x-topo-replayed-at / x-topo-replayed-from headers; its failure headers are dropped.
    Every subscribed group receives it again, as it did the original event.
    """
    runtime = open_runtime(topology_path, broker)
    try:
        group = runtime.topology.group(group_name)
    except KeyError as error:
        raise click.ClickException(str(error).strip("'\"")) from None
    reader = runtime.transport.open_dead_letters(group)
    producer = runtime.transport.open_publisher("dlq-replay")
    try:
        letters = reader.take(limit, timeout)
        errors: list[str] = []
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
        if producer.flush(30):
            errors.append("some replayed events were not confirmed within 30s")
        if errors:
            raise click.ClickException("replay incomplete, nothing recorded as replayed:\n" + "\n".join(errors))
        reader.done(letters)
        click.echo(f"replayed {len(letters)} dead letter(s) of group {group_name}")
    finally:
        producer.close()
        reader.close()
        runtime.close()
