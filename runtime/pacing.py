"""Where handlers run by default: inline on the loop thread while they are quick, on worker
threads while they block.

Inline, a handler call costs no hand-off between threads (the fastest mode for quick handlers),
but a handler that blocks (sleeps, waits on I/O) holds the loop thread and serves one event at a
time. So the runner runs inline work in slices of about SLICE and measures each slice: wall time,
the thread's CPU time and its voluntary context switches. Time off the CPU with voluntary switches
is blocking (a busy machine preempts the loop thread too, but preemption is an involuntary switch
and the off-CPU share per event stays small). A slice that blocked moves the group to worker
threads. From there the runner probes inline again after PROBE_FIRST seconds, doubling the wait
(up to PROBE_MAX) each time the handlers still block: hysteresis, so a group does not flap.

Per-key order across a switch: to threads only when no inline lane is parked (the rest of the
batch then goes to the workers of its keys, which are idle); back inline only once nothing is in
flight (fetching stops for at most PROBE_BARRIER to get there).
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from topo.runtime.transport.base import ConsumerTransport

SLICE = 0.02  # seconds of inline handling before the loop serves its connection again
BLOCKED_PER_EVENT = 100e-6  # off-CPU seconds per event from which worker threads pay for their hand-off
PROBE_FIRST = 2.0  # seconds on worker threads before trying inline again
PROBE_MAX = 60.0
PROBE_BARRIER = 1.0  # seconds fetching may stop for in-flight work to finish before going inline
DEFAULT_THREADS = 8  # worker threads of the default (adaptive) mode once handlers block
KEEPALIVE_EVERY = 1.0  # seconds: how often the watchdog serves a connection while a handler holds the loop

_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)  # Linux; elsewhere off-CPU time alone decides


def _voluntary_switches() -> int:
    if _RUSAGE_THREAD is None:
        return 1
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


class SliceMeter:
    """Wall time, CPU time and voluntary context switches of the calling thread over one slice."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.switches = 0

    def start(self) -> None:
        self.wall, self.cpu, self.switches = time.perf_counter(), time.thread_time(), _voluntary_switches()

    def blocked(self, events: int) -> bool:
        """Whether the slice since `start()`, which handled `events`, blocked."""
        wall = time.perf_counter() - self.wall
        off_cpu = wall - (time.thread_time() - self.cpu)
        switched = _voluntary_switches() - self.switches
        return (events > 0 and switched > 0 and off_cpu * 2 >= wall
                and off_cpu >= BLOCKED_PER_EVENT * events)


class Pacing:
    """The mode of one runner: fixed (`--concurrency N`) or adaptive (the default)."""

    def __init__(self, adaptive: bool, threaded: bool) -> None:
        self.adaptive = adaptive
        self.threaded = threaded
        self.interval = PROBE_FIRST
        self.probe_at = float("inf")
        self.probing = False  # back inline on trial: the next slice decides
        self.barrier_since: float | None = None  # fetching stopped for a probe
        self.switches = 0  # mode changes so far (tests, logs)

    def to_threads(self, now: float) -> None:
        if self.probing:
            self.interval = min(PROBE_MAX, self.interval * 2)
        self.probing = False
        self.threaded = True
        self.probe_at = now + self.interval
        self.switches += 1

    def probe_due(self, now: float) -> bool:
        return self.adaptive and self.threaded and now >= self.probe_at

    def hold(self, now: float) -> bool:
        """A probe is due: stop fetching until nothing is in flight. False once it waited too long
        (the probe is put off as if it had failed)."""
        if self.barrier_since is None:
            self.barrier_since = now
        if now - self.barrier_since <= PROBE_BARRIER:
            return True
        self.barrier_since = None
        self.interval = min(PROBE_MAX, self.interval * 2)
        self.probe_at = now + self.interval
        return False

    def to_inline(self) -> None:
        self.barrier_since = None
        self.threaded = False
        self.probing = True
        self.switches += 1

    def quick_slice(self) -> None:
        """A slice ran inline without blocking: a probe succeeded."""
        if self.probing:
            self.probing = False
            self.interval = PROBE_FIRST


class Keepalive:
    """A watchdog thread: while one inline slice holds the loop thread in handlers for
    KEEPALIVE_EVERY or longer, it serves the consumer's connection (RabbitMQ: pika answers
    heartbeats only when served). The loop thread brackets each slice with `enter`/`leave`; the
    lock makes sure the loop has not resumed using the connection while the watchdog serves it."""

    def __init__(self, name: str, consumer: Callable[[], ConsumerTransport | None]) -> None:
        self.consumer = consumer
        self.since: float | None = None  # a slice runs handlers on the loop thread since
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.served = 0  # times the connection was served from here (tests)
        self.thread = threading.Thread(target=self._watch, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.finished.set()
        self.thread.join()

    def enter(self) -> None:
        self.since = time.monotonic()

    def leave(self) -> None:
        with self.lock:
            self.since = None

    def _watch(self) -> None:
        while not self.finished.wait(KEEPALIVE_EVERY):
            since, consumer = self.since, self.consumer()
            if since is None or consumer is None or not consumer.needs_keepalive:
                continue
            if time.monotonic() - since >= KEEPALIVE_EVERY:
                with self.lock:
                    if self.since is since:
                        consumer.keepalive()
                        self.served += 1
