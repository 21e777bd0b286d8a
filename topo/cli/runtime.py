"""`topo run`, `topo publish`, `topo tail`: the runtime's commands (and what `topo dlq` shares with them)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from topo.cli.options import (
    CliError,
    ErrorLines,
    LocatedError,
    broker_option,
    generated_option,
    group_option,
    json_option,
    strict_option,
    topology_option,
)
from topo.cli.source import check_source, generated_folder, load, pick_event, pick_group
from topo.core.client_logs import route_client_logs
from topo.core.model import ConsumerGroup, EventTopic, Topology
from topo.runtime.app import Runtime
from topo.runtime.cloudevents import CloudEventsReader, is_cloudevent
from topo.runtime.imports import ImportFailure, import_user_module
from topo.runtime.process import tune_garbage_collector
from topo.runtime.publisher import PublishError, validated_payload
from topo.runtime.transport.base import Delivery, DeliveryReport, NotProvisioned, TransportError

F = TypeVar("F", bound=Callable[..., Any])


def runtime_options(function: F) -> F:
    """-t/--topology, --generated and --broker, shared by every runtime command."""
    broker = broker_option(default_help="TOPO_BROKER, else the topology's broker.kind")
    return topology_option()(generated_option()(broker(function)))


def open_runtime(topology_path: Path, topology: Topology, generated_dir: Path | None, broker: str | None
                 ) -> Runtime:
    """A Runtime on `topology`, loaded from exactly `topology_path`, with the generated classes that match it."""
    folder = generated_folder(topology_path, topology, generated_dir)
    try:
        return Runtime.from_topology(topology, folder, broker=broker)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise CliError(str(error)) from None


def user_code_error(error: ImportFailure) -> CliError:
    """A handler or --import module that does not load: a syntax error prints `FILE:LINE:COL: syntax error: ...`."""
    return LocatedError(str(error)) if error.location else CliError(str(error))


def payload_error(error: PublishError, chain_id: int | None) -> CliError:
    """An invalid --payload: one line per field; a missing chain_id names --chain."""
    if not error.problems:
        return CliError(str(error))
    return ErrorLines([f"{problem}; pass --chain ID or put chain_id in --payload"
                       if problem.missing and problem.field == "payload.chain_id" and chain_id is None
                       else str(problem) for problem in error.problems])


def broker_error(error: TransportError, topology_path: Path) -> CliError:
    """One line for broker trouble; a topology not applied gets the `topo apply` naming its file."""
    if isinstance(error, NotProvisioned):
        return CliError(error.explain(str(topology_path)))
    return CliError(str(error))


def probe_broker(runtime: Runtime, topology_path: Path, topics: Sequence[EventTopic] = (),
                 group: ConsumerGroup | None = None) -> None:
    """Reach the broker within a bounded time and check `topics` / the group's plumbing exist;
    a CliError (after closing `runtime`) when not. Client logs stay quiet: this line says it."""
    route_client_logs(quiet=True)
    try:
        runtime.transport.probe(topics, group)
    except TransportError as error:
        runtime.close()
        raise broker_error(error, topology_path) from None


def import_from_current_directory() -> None:
    """Like `python -m`: a handler module in the current folder is importable (`--import`, `handler:`)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


@click.command()
@group_option()
@runtime_options
@click.option("--concurrency", type=click.IntRange(0, 1024), default=None,
              help="Fix the worker threads running handlers (events with one key always run one at a time); "
                   "0 runs handlers on the consume thread. Default: adaptive, on the consume thread while "
                   "handlers are quick, on 8 worker threads while they block.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds in-flight handlers get to finish on SIGTERM/SIGINT or a rebalance.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz and /readyz on this port (0: any free port).")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE first (repeatable) and run the handlers registered on its top-level "
                   "Runtime or HandlerRegistry objects (`@app.handler(group, event)`).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of SQLite dedup stores without an explicit path (default: TOPO_STATE_DIR or .topo-state).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--gc-tuning/--no-gc-tuning", default=True, show_default=True,
              help="Freeze start-up objects and collect cycles every 20,000 allocations instead of 700 "
                   "(topo.runtime.process).")
@strict_option
def run(group_name: str, topology_path: Path, generated_dir: Path | None, broker: str | None, concurrency: int | None,
        shutdown_timeout: float, metrics_port: int | None, imports: tuple[str, ...], state_dir: Path | None,
        log_level: str, gc_tuning: bool, strict: bool) -> None:
    """Run a consumer group's handlers until SIGTERM/SIGINT, then drain and exit."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    route_client_logs(debug=log_level == "debug")
    from topo.runtime.metrics import RuntimeMetrics

    topology = load(topology_path)
    check_source(topology_path, topology, strict)
    pick_group(topology, group_name)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    runtime.state_dir = state_dir
    import_from_current_directory()
    for module in imports:  # its top-level Runtime / HandlerRegistry objects hold what it registered
        try:
            imported = import_user_module(module, f"--import {module}")
        except ImportFailure as error:
            raise user_code_error(error) from None
        if not runtime.adopt(imported):
            logging.getLogger("topo.runtime").warning(
                "--import %s: no handler registered on a Runtime or HandlerRegistry at its top level", module)
    metrics = state = server = None
    if metrics_port is not None:
        from topo.runtime.observe.health import RuntimeState
        from topo.runtime.observe.server import serve_runtime

        metrics = runtime.metrics = RuntimeMetrics(runtime.topology)
        state = RuntimeState([group_name])
        try:
            server = serve_runtime(metrics, state, port=metrics_port)
        except OSError as error:  # its message names the port and the fix
            raise CliError(str(error)) from None
        click.echo(f"metrics on :{server.port}", err=True)
    try:
        runner = runtime.runner(group_name, concurrency=concurrency, shutdown_timeout=shutdown_timeout, state=state,
                                client_id=str(os.getpid()))
    except ImportFailure as error:
        raise user_code_error(error) from None
    except (KeyError, LookupError) as error:
        raise CliError(str(error).strip("'\"")) from None
    register_signals(runner.stop)
    if gc_tuning:
        tune_garbage_collector()
    try:
        runner.run()
    except TransportError as error:  # not applied, or a broker failure the runner cannot ride out
        raise broker_error(error, topology_path) from None
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
@runtime_options
@json_option
@strict_option
def publish(event: str, chain_id: int | None, payload_text: str, producer: str, topology_path: Path,
            generated_dir: Path | None, broker: str | None, as_json: bool, strict: bool) -> None:
    """Publish one EVENT, validated against the topology, and wait for the broker's confirmation.

    Prints the event id, topic and key; with --json, the whole delivery report (destination,
    partition and offset when the broker tells them).
    """
    topology = load(topology_path)
    check_source(topology_path, topology, strict)
    declared = pick_event(topology, event)
    try:
        payload = json.loads(sys.stdin.read() if payload_text == "-" else payload_text)
    except json.JSONDecodeError as error:
        raise CliError(f"--payload is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise CliError("--payload must be a JSON object")
    if chain_id is not None:
        payload.setdefault("chain_id", chain_id)
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    runtime.producer = producer or (declared.producers[0] if declared.producers else runtime.producer)
    try:  # a payload mistake is reported without a broker
        validated = validated_payload(runtime.classes, event, payload)
    except PublishError as error:
        runtime.close()
        raise payload_error(error, chain_id) from None
    chain = chain_id if chain_id is not None else payload.get("chain_id")
    probe_broker(runtime, topology_path, [t for t in declared.topics if chain is None or t.chain_id == chain])
    reports: list[DeliveryReport] = []
    try:
        sent = runtime.publisher().publish(validated, chain_id, event_type=event, on_delivery=reports.append)
        runtime.publisher().flush(30)
    except PublishError as error:
        raise payload_error(error, chain_id) from None
    except TransportError as error:
        raise broker_error(error, topology_path) from None
    finally:
        runtime.close()
    if not reports or reports[0].error is not None:
        raise CliError(f"not confirmed by the broker: {reports[0].error if reports else 'timed out'}")
    if not as_json:
        click.echo(json.dumps({"event_id": str(sent.event_id), "topic": sent.topic.topic, "key": sent.key}))
        return
    report = reports[0]
    click.echo(json.dumps({
        "event_id": str(sent.event_id), "event_type": sent.event_type, "chain_id": sent.chain_id, "key": sent.key,
        "topic": sent.topic.topic, "routing_key": sent.topic.routing_key, "destination": report.destination,
        "partition": report.partition, "offset": report.offset,
    }, indent=2, sort_keys=True))


def render(delivery: Delivery, raw: bool, cloudevents: CloudEventsReader | None = None) -> str:
    return json.dumps(envelope(delivery, cloudevents) if raw else delivery_json(delivery, cloudevents), sort_keys=True)


def envelope(delivery: Delivery, cloudevents: CloudEventsReader | None = None) -> Any:
    """The event's envelope; a CloudEvent (binary content mode) as the envelope topo reads it as."""
    try:
        if cloudevents is not None and delivery.headers and is_cloudevent(delivery.headers):
            return json.loads(cloudevents.envelope(delivery))
        return json.loads(delivery.body)
    except ValueError:
        return {"undecodable": delivery.body.decode("utf-8", "replace")}


def delivery_json(delivery: Delivery, cloudevents: CloudEventsReader | None = None) -> dict[str, Any]:
    """One delivery as `topo tail` and `topo dlq list` print it: where it was, its key, headers and envelope."""
    entry: dict[str, Any] = {"topic": delivery.topic, "partition": delivery.partition, "offset": delivery.offset,
                             "key": delivery.key, "event": envelope(delivery, cloudevents)}
    if delivery.headers:
        entry["headers"] = dict(sorted(delivery.headers.items()))
    return entry


@click.command()
@click.argument("events", nargs=-1, required=True)
@click.option("--chain", "chains", type=int, multiple=True, help="Only these chains (repeatable).")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained event, not at new ones.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Exit after this many events.")
@click.option("--timeout", type=click.FloatRange(0), default=None, help="Exit after this many seconds.")
@click.option("--raw", is_flag=True, help="Print only the envelopes.")
@runtime_options
def tail(events: tuple[str, ...], chains: tuple[int, ...], from_beginning: bool, limit: int | None,
         timeout: float | None, raw: bool, topology_path: Path, generated_dir: Path | None, broker: str | None
         ) -> None:
    """Print EVENTS as they arrive (one JSON per line), without touching any group's offsets."""
    topology = load(topology_path)
    topics = [t for name in events for t in pick_event(topology, name).topics if not chains or t.chain_id in chains]
    if not topics:
        raise CliError(f"no topic of {', '.join(events)} on chain(s) {', '.join(map(str, chains))}")
    runtime = open_runtime(topology_path, topology, generated_dir, broker)
    probe_broker(runtime, topology_path, topics)
    try:
        reader = runtime.transport.open_tail(topics, from_beginning)
    except TransportError as error:
        runtime.close()
        raise broker_error(error, topology_path) from None
    stop = threading.Event()
    register_signals(stop.set)
    cloudevents = CloudEventsReader(topology)
    shown = 0
    ends = None if timeout is None else time.monotonic() + timeout
    try:
        click.echo(f"tailing {len(topics)} topic(s)", err=True)  # ready: events published from now on are shown
        while not stop.is_set() and (limit is None or shown < limit) and (ends is None or time.monotonic() < ends):
            for delivery in reader.poll(100 if limit is None else min(100, limit - shown), 0.2):
                click.echo(render(delivery, raw, cloudevents))
                shown += 1
    finally:
        reader.close()
        runtime.close()
