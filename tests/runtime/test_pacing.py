"""The default mode (topo.runtime.pacing): handlers inline while quick, on worker threads while they
block, back inline once they are quick again; per-key order and one-at-a-time per key across
every switch; and inline handlers never starve RabbitMQ's heartbeats."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from topologies import Bus

from tests.support.waiting import wait_until
from topo.runtime.runner import GroupRunner

pytestmark = pytest.mark.timeout(120)

KEYS = [f"k{index}" for index in range(6)]


class Recorder:
    """Per key: the order handled, overlaps (two events of a key at once), and the thread of each."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.lock = threading.Lock()
        self.active: set[str] = set()
        self.overlaps: list[str] = []
        self.order: dict[str, list[int]] = defaultdict(list)
        self.threads: dict[int, str] = {}

    def handle(self, event: Any) -> None:
        payload = event.payload
        with self.lock:
            if payload.sender in self.active:
                self.overlaps.append(payload.sender)
            self.active.add(payload.sender)
        if payload.note == "slow":
            time.sleep(self.slow)  # blocks: off the CPU with a voluntary switch
        with self.lock:
            self.active.discard(payload.sender)
            self.order[payload.sender].append(payload.seq)
            self.threads[payload.seq] = threading.current_thread().name

    @property
    def count(self) -> int:
        return len(self.threads)


def publish(runtime: Any, seqs: range, note: str | None = None) -> None:
    module = runtime.classes.module
    publisher = runtime.publisher()
    for seq in seqs:
        publisher.publish(module.TxSeen(chain_id=1, sender=KEYS[seq % len(KEYS)], seq=seq, note=note))
    assert publisher.flush(30) == 0


def test_blocking_handlers_move_to_threads_and_back_keeping_order_per_key(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    recorder = Recorder(slow=0.003)
    runtime.register("beta", recorder.handle)
    runner: GroupRunner = runtime.runner("beta")  # the default: adaptive
    loop = threading.Thread(target=runner.run, kwargs={"timeout": 100}, name="loop-thread", daemon=True)
    loop.start()
    try:
        publish(runtime, range(0, 100))
        wait_until(lambda: recorder.count >= 100, 30, lambda: f"quick events handled ({recorder.count})")
        assert not runner.pacing.threaded and runner.pacing.switches == 0
        publish(runtime, range(100, 300), note="slow")
        wait_until(lambda: recorder.count >= 300, 30, lambda: f"slow events handled ({recorder.count})")
        assert runner.pacing.switches >= 1, "blocking handlers stayed on the loop thread"
        # Quick again: a probe (PROBE_FIRST after the switch) brings the group back inline.
        sent = 300

        def back_inline() -> bool:
            nonlocal sent
            if runner.pacing.threaded:
                publish(runtime, range(sent, sent + 12))
                sent += 12
            return not runner.pacing.threaded

        wait_until(back_inline, 40, lambda: f"back inline (switches {runner.pacing.switches}, "
                                            f"handled {recorder.count}/{sent})", interval=0.2)
        publish(runtime, range(sent, sent + 12))
        sent += 12
        wait_until(lambda: recorder.count >= sent, 30, lambda: f"every event handled ({recorder.count}/{sent})")
    finally:
        runner.stop()
        loop.join(60)
    assert not loop.is_alive()
    quick_first = {recorder.threads[seq] for seq in range(100)}
    assert quick_first == {"loop-thread"}, f"quick handlers ran off the loop thread: {quick_first}"
    slow_threads = {recorder.threads[seq] for seq in range(100, 300)}
    assert any("worker" in name for name in slow_threads), f"slow handlers never reached a worker: {slow_threads}"
    assert recorder.threads[sent - 1] == "loop-thread"
    assert not recorder.overlaps, f"events of one key ran at the same time: {recorder.overlaps[:5]}"
    for key, seqs in recorder.order.items():
        assert seqs == sorted(seqs), f"key {key} out of order: {seqs}"
        assert len(seqs) == len(set(seqs)), f"key {key} handled twice"
    assert sum(len(seqs) for seqs in recorder.order.values()) == sent


def test_a_long_inline_handler_keeps_the_rabbitmq_connection(make_bus: Callable[..., Bus], transport_kind: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    if transport_kind != "rabbitmq":
        pytest.skip("not applicable: only RabbitMQ's client must be served to heartbeat")
    bus = make_bus()
    monkeypatch.setenv("RABBITMQ_URL", os.environ["RABBITMQ_URL"] + "?heartbeat=1")  # the broker gives up after ~2-3 s
    caplog.set_level(logging.INFO, "topo.runtime")
    runtime = bus.runtime()
    recorder = Recorder(slow=6.0)
    runtime.register("beta", recorder.handle)
    publish(runtime, range(0, 1), note="slow")
    publish(runtime, range(1, 3))
    runner = runtime.runner("beta", concurrency=0)  # inline, fixed: the 6 s call holds the loop thread
    runner.run(until=lambda: recorder.count >= 3 and runner.in_flight == 0, timeout=60)
    said = [record.getMessage() for record in caplog.records if record.name == "topo.runtime"]
    assert not [line for line in said if "lost" in line], said
    assert runner.keepalive is not None and runner.keepalive.served >= 2, "the watchdog did not serve the connection"
    assert recorder.order["k0"] == [0] and recorder.threads[0] == threading.current_thread().name
