"""`topo lag` (one-shot table or JSON) and `topo monitor` (long-running lag exporter)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import click
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from topo.cli.options import CliError, broker_option, group_option, json_option, topology_option
from topo.cli.source import load, pick_groups
from topo.core.client_logs import route_client_logs
from topo.core.model import BrokerKind, ConsumerGroup, Topology
from topo.runtime.observe.exporter import LagCollector
from topo.runtime.observe.health import Verdict
from topo.runtime.observe.lag import KIND_RETRY, LagError, Snapshot, open_reader
from topo.runtime.observe.server import ObservabilityServer
from topo.runtime.observe.status import ProgressTracker
from topo.runtime.transport.base import NotProvisioned

log = logging.getLogger("topo.observe")

DEFAULT_MONITOR_PORT = 9400
DEFAULT_INTERVAL = 15.0
MISSING_SHOWN = 3  # names of missing topics/queues printed per group
TEXT_COLUMNS = {"GROUP", "TOPIC", "EVENT", "CHAIN", "QUEUE", "KIND", "STATE"}


def _topology(path: Path, groups: tuple[str, ...]) -> tuple[Topology, tuple[ConsumerGroup, ...]]:
    topology = load(path)
    return topology, pick_groups(topology, groups)


def _fmt_seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {"taken_at": snapshot.taken_at, "broker": snapshot.broker,
            "groups": [{**asdict(g), "sum_lag": g.sum_lag, "max_lag": g.max_lag,
                        "max_lag_seconds": g.max_lag_seconds} for g in snapshot.groups]}


def render_partitions(snapshot: Snapshot, console: Console) -> None:
    """Every stream of every group: Kafka partitions, RabbitMQ queues (retry streams included)."""
    kafka = snapshot.broker == BrokerKind.KAFKA.value
    table = Table(title=f"consumer lag per {'partition' if kafka else 'queue'} ({snapshot.broker})")
    columns = (["GROUP", "TOPIC", "PARTITION", "EVENT", "CHAIN", "COMMITTED", "END", "LAG", "LAG_S"] if kafka
               else ["GROUP", "QUEUE", "KIND", "READY", "UNACKED", "CONSUMERS", "LAG", "LAG_S"])
    for column in columns:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    for group in snapshot.groups:
        for s in group.streams:
            if kafka:
                table.add_row(group.group, s.topic, str(s.partition), s.event_type or s.kind, s.chain_id,
                              "-" if s.position is None else str(s.position), str(s.end), str(s.lag),
                              _fmt_seconds(s.lag_seconds))
            else:
                table.add_row(group.group, s.topic, s.kind, str(s.ready), str(s.unacked), str(s.consumers),
                              str(s.lag), _fmt_seconds(s.lag_seconds))
    console.print(table)


def render_groups(snapshot: Snapshot, console: Console) -> None:
    """One row per group: its event streams' lag, retries waiting, dead letters and members."""
    table = Table(title=f"consumer lag per group ({snapshot.broker})")
    for column in ("GROUP", "LAG", "MAX_LAG", "LAG_S", "RETRYING", "DEAD_LETTERS", "MEMBERS", "STATE"):
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    for group in snapshot.groups:
        retrying = sum(s.lag for s in group.streams if s.kind == KIND_RETRY)
        table.add_row(group.group, str(group.sum_lag), str(group.max_lag), _fmt_seconds(group.max_lag_seconds),
                      str(retrying), str(group.dead_letters), str(group.members), group.state or "-")
    console.print(table)
    for group in snapshot.groups:
        if group.missing:
            shown = ", ".join(group.missing[:MISSING_SHOWN])
            more = f" and {len(group.missing) - MISSING_SHOWN} more" if len(group.missing) > MISSING_SHOWN else ""
            console.print(f"{group.group}: {len(group.missing)} missing on the broker ({shown}{more}); run "
                          f"`topo apply --broker {snapshot.broker}`", style="yellow", highlight=False)


@click.command()
@topology_option()
@group_option(multiple=True)
@broker_option()
@click.option("--partitions", "per_partition", is_flag=True,
              help="Also print every partition (Kafka) or queue (RabbitMQ) of each group, retry streams included.")
@json_option
def lag(topology_path: Path, groups: tuple[str, ...], broker: str | None, per_partition: bool,
        as_json: bool) -> None:
    """Consumer lag per group, read from the broker: events behind (LAG: all event streams, MAX_LAG:
    the largest one), age of the oldest waiting event in seconds (LAG_S), events waiting in retry
    streams, dead letters not yet replayed, members and group state. --partitions adds the
    per-partition (per-queue) table; --json always holds every stream."""
    topology, selected = _topology(topology_path, groups)
    route_client_logs(quiet=True)  # the error line below says what the clients would log
    reader = open_reader(topology, BrokerKind(broker) if broker else None)
    try:
        snapshot = reader.read(selected)
    except LagError as exc:
        raise CliError(str(exc)) from None
    finally:
        reader.close()
    missing = [(group, name) for group in snapshot.groups for name in group.missing]
    if missing:
        group, name = missing[0]
        what = f"topic {name}" if snapshot.broker == BrokerKind.KAFKA.value else f"queue {name!r}"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CliError(NotProvisioned(snapshot.broker, f"{what} of group {group.group}{more}",
                                      topology.name).explain(str(topology_path)))
    if as_json:
        click.echo(json.dumps(snapshot_json(snapshot), indent=2, sort_keys=True))
    else:
        console = Console(width=200)
        if per_partition:
            render_partitions(snapshot, console)
        render_groups(snapshot, console)


class Monitor:
    """Polls the broker every `interval` seconds into a LagCollector until stopped."""

    def __init__(self, topology: Topology, groups: tuple[ConsumerGroup, ...], broker: BrokerKind | None,
                 interval: float) -> None:
        self.topology = topology
        self.groups = groups
        self.reader = open_reader(topology, broker)
        self.tracker = ProgressTracker(topology)
        self.collector = LagCollector(topology.name)
        self.interval = interval
        self.stopping = threading.Event()
        self.polled = threading.Event()

    def poll_once(self) -> None:
        started = time.monotonic()
        try:
            snapshot = self.reader.read(self.groups)
        except LagError as exc:
            if exc.refused:  # wrong credentials or an untrusted certificate: polling again does not help
                raise CliError(str(exc)) from None
            log.error("%s", exc)
            self.collector.failed(time.time())
            return
        statuses = self.tracker.observe(snapshot)
        self.collector.update(snapshot, statuses, time.monotonic() - started)
        self.polled.set()
        for status in statuses.values():
            if status.label != "ok":
                log.warning("group %s is %s: %s", status.group, status.label, status.detail)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                self.poll_once()
                self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            self.reader.close()

    def readiness(self) -> Verdict:
        ok = self.polled.is_set()
        return Verdict(ok, () if ok else ("no successful poll of the broker yet",), {})

    def liveness(self) -> Verdict:
        up, last = self.collector.healthy_since()
        # Unhealthy only after polls kept failing for three intervals: one broker hiccup is not a restart.
        stale = time.time() - last if last else 0.0
        ok = up or stale < 3 * self.interval or not self.polled.is_set()
        reasons = () if ok else (f"polls of the broker failing for {stale:.0f}s",)
        return Verdict(ok, reasons, {"up": up, "seconds_since_last_poll": stale})


@click.command()
@topology_option()
@group_option(multiple=True)
@broker_option()
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_MONITOR_PORT, show_default=True,
              help="Port of /metrics, /healthz and /readyz (0: any free port, logged).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=DEFAULT_INTERVAL, show_default=True,
              help="Seconds between polls of the broker.")
def monitor(topology_path: Path, groups: tuple[str, ...], broker: str | None, port: int, host: str,
            interval: float) -> None:
    """Long-running lag exporter: lag, slow and stalled consumers, dead letters, as Prometheus metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    route_client_logs()  # client connection failures: topo's own error line says them
    topology, selected = _topology(topology_path, groups)
    runner = Monitor(topology, selected, BrokerKind(broker) if broker else None, interval)
    registry = CollectorRegistry()
    registry.register(runner.collector)
    server = ObservabilityServer(registry, ready=runner.readiness, healthy=runner.liveness, host=host, port=port)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"topo monitor: serving {server.url}/metrics, polling every {interval:g}s", err=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        runner.run()
    finally:
        server.stop()
