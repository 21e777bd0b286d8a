"""`make demo`: the explorer's event bus end to end on the local brokers, in one process.

    python -m examples.demo [-t topology.yaml] [--broker kafka|rabbitmq] [--rate 20] [--seconds 0] [--plain]

Run it from the repository root after `topo apply -t topology.yaml --yes` (`make demo` does both).
A simulated indexer, mempool and verification service (`examples.simulation`) publish valid
events at a steady rate, each with its own publisher; every consumer group runs its example
handler (`examples.explorer_handlers`, as topology.yaml names it) on a runner thread, as `topo run
--group` would in its own process. The mempool sends a pending transaction without a fee every
few seconds: the fee-oracle refuses it, retries it after 1 s, 2 s and 4 s, then dead-letters it.
A live table (`examples.dashboard`) shows each group's throughput, lag, retries and dead letters
until Ctrl-C (or `--seconds`); then the producers stop, every runner drains, and it exits 0.
Without a terminal (or with `--plain`) it prints one status line per group instead of the table.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from examples.dashboard import Dashboard, LastLines
from examples.simulation import Chains, Event
from topo.core.model import BrokerKind, Topology
from topo.generator.load import load_topology
from topo.runtime.app import Runtime
from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.lag import LagError, open_reader
from topo.runtime.runner import GroupRunner

log = logging.getLogger("examples.demo")
POISON_EVERY = 8.0  # seconds between two fee-less pending transactions
LAG_EVERY = 2.0  # seconds between two lag reads


class Producer(threading.Thread):
    """A simulated service publishing its events at `rate` per second until `stop` is set."""

    def __init__(self, app: Runtime, rate: float, events: Callable[[], Iterable[Event]], stop: threading.Event
                 ) -> None:
        super().__init__(name=f"demo-{app.producer}", daemon=True)
        self.app, self.interval, self.events, self.stop = app, 1.0 / rate, events, stop

        self.failure: Exception | None = None

    def run(self) -> None:
        publisher = self.app.publisher()
        due = time.monotonic()
        try:
            while not self.stop.is_set():
                for event_type, chain_id, payload in self.events():
                    publisher.publish({**payload, "chain_id": chain_id}, chain_id, event_type=event_type)
                    due += self.interval
                    if self.stop.wait(max(0.0, due - time.monotonic())):
                        break
        except Exception as error:  # the demo stops: a simulation that cannot publish shows nothing
            self.failure = error
            log.error("%s cannot publish: %s", self.app.producer, error)
            self.stop.set()
        finally:
            publisher.flush(10)


def mempool_events(chains: Chains) -> Callable[[], Iterable[Event]]:
    """Priced pending transactions, and a fee-less one every POISON_EVERY seconds (the first after 2 s)."""
    next_poison = time.monotonic() + 2.0

    def events() -> Iterable[Event]:
        nonlocal next_poison
        poison = time.monotonic() >= next_poison
        if poison:
            next_poison += POISON_EVERY
        return [chains.pending(fee_less=poison)]

    return events


def producers(topology: Topology, generated: Path, broker: str, metrics: RuntimeMetrics, rate: float,
              stop: threading.Event) -> list[Producer]:
    chains = Chains(tuple(chain.id for chain in topology.chains))

    def app(name: str) -> Runtime:
        return Runtime.from_topology(topology, generated, broker=broker, producer=name, metrics=metrics)

    return [Producer(app("indexer"), rate * 0.6, chains.block, stop),
            Producer(app("mempool"), rate * 0.35, mempool_events(chains), stop),
            Producer(app("verification"), rate * 0.05, lambda: [chains.verified()], stop)]


class LagWatcher(threading.Thread):
    """Reads every group's lag from the broker every LAG_EVERY seconds into the dashboard."""

    def __init__(self, topology: Topology, broker: str, dashboard: Dashboard, stop: threading.Event) -> None:
        super().__init__(name="demo-lag", daemon=True)
        self.reader = open_reader(topology, BrokerKind(broker))
        self.topology, self.dashboard, self.stop = topology, dashboard, stop

    def run(self) -> None:
        try:
            while True:
                try:
                    self.dashboard.take(self.reader.read(self.topology.groups))
                except LagError as error:
                    log.warning("lag: %s", error)
                if self.stop.wait(LAG_EVERY):
                    return
        finally:
            self.reader.close()


Running = list[tuple[GroupRunner, threading.Thread]]


def run_groups(app: Runtime, groups: Sequence[str], shutdown_timeout: float) -> Running:
    """Every group's runner on its own thread, as `topo run --group` runs it in a process."""
    started: Running = []
    for name in groups:
        runner = app.runner(name, concurrency=2, shutdown_timeout=shutdown_timeout, client_id=f"demo-{name}")
        thread = threading.Thread(target=runner.run, name=f"demo-{name}", daemon=True)
        thread.start()
        started.append((runner, thread))
    return started


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("-t", "--topology", type=Path, default=Path("topology.yaml"))
    parser.add_argument("--broker", choices=["kafka", "rabbitmq"], default=None, help="default: broker.kind")
    parser.add_argument("--rate", type=float, default=20.0, help="events published per second (default 20)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default 0: at Ctrl-C)")
    parser.add_argument("--shutdown-timeout", type=float, default=15.0, help="seconds each group gets to drain")
    parser.add_argument("--plain", action="store_true", help="status lines instead of the live table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    topology = load_topology(options.topology)
    generated = options.topology.parent / "generated"
    broker = options.broker or topology.broker.value
    last = LastLines()
    handler_logs = logging.getLogger("examples")
    handler_logs.setLevel(logging.INFO)
    handler_logs.propagate = False  # the table shows each group's last line instead of a scrolling log
    handler_logs.addHandler(last)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C exits at once
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    metrics = RuntimeMetrics(topology)
    metrics.init_publisher()
    groups = [group.name for group in topology.groups]
    consumers = Runtime.from_topology(topology, generated, broker=broker, metrics=metrics)
    for name in groups:
        metrics.init_group(topology.group(name))
    dashboard = Dashboard(f"{topology.name} on {broker}", groups, metrics, last)
    console = Console(file=sys.stdout)  # the real stdout: the handlers' prints are redirected below
    plain = options.plain or not console.is_terminal
    stopped_at = time.monotonic() + options.seconds if options.seconds else None
    print(f"demo: {len(groups)} groups on {broker} ({options.topology}); Ctrl-C stops", flush=True)
    runners = run_groups(consumers, groups, options.shutdown_timeout)
    lag = LagWatcher(topology, broker, dashboard, stop)
    services = producers(topology, generated, broker, metrics, options.rate, stop)
    try:
        lag.start()
        for service in services:
            service.start()
        show(dashboard, console, plain, stop, stopped_at, last)
    finally:  # Ctrl-C, --seconds, or a failure: the runners drain in every case
        code = shut_down(stop, services, runners, lag, consumers, options.shutdown_timeout)
    return code


def show(dashboard: Dashboard, console: Console, plain: bool, stop: threading.Event, stopped_at: float | None,
         last: LastLines) -> None:
    """The live table (or status lines) until `stop` is set or `stopped_at` (time.monotonic) has passed."""

    def running() -> bool:
        return not stop.wait(2.0 if plain else 0.5) and (stopped_at is None or time.monotonic() < stopped_at)

    with contextlib.redirect_stdout(last.printer("notifications")):  # on_transfer prints its notification
        if plain:
            while running():
                for row in dashboard.refresh():
                    print(row.plain(), file=sys.__stdout__, flush=True)
        else:
            with Live(dashboard.table(), console=console, refresh_per_second=2, redirect_stdout=False) as live:
                while running():
                    live.update(dashboard.table())


def shut_down(stop: threading.Event, services: list[Producer], runners: Running,
              lag: LagWatcher, consumers: Runtime, shutdown_timeout: float) -> int:
    """Stop publishing, drain every group, close the clients; 0 when everything ended in time."""
    stop.set()
    print("demo: stopping: producers flush, every group drains", flush=True)
    for service in services:
        if service.ident is not None:  # started
            service.join(15)
        service.app.close()
    for runner, _ in runners:
        runner.stop()
    stuck = []
    for runner, thread in runners:
        thread.join(shutdown_timeout + 10)
        if thread.is_alive() or runner.failure is not None:
            stuck.append(f"{runner.group.name}: {runner.failure or 'still running'}")
    if lag.ident is not None:
        lag.join(15)
    consumers.close()
    stuck += [f"{s.app.producer}: {s.failure or 'still publishing'}" for s in services if s.is_alive() or s.failure]
    if stuck:
        print(f"demo: not stopped cleanly: {'; '.join(stuck)}", flush=True)
        return 1
    print("demo: stopped cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
