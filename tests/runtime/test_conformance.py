"""Conformance: the same guarantees on every transport (in-process consumers)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from topologies import Bus

from topo.runtime import headers as H
from topo.runtime.consumer import GroupRunner

pytestmark = pytest.mark.timeout(180)


def run_in_thread(runner: GroupRunner, until: Callable[[], bool], timeout: float) -> threading.Thread:
    thread = threading.Thread(target=runner.run, kwargs={"until": until, "timeout": timeout}, daemon=True)
    thread.start()
    return thread


def settled(runner: GroupRunner, condition: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: condition() and runner.in_flight == 0


def publish_tx(bus: Bus, runtime: Any, sender: str, seq: int, chain: int = 1, note: str | None = None) -> None:
    module = runtime.classes.module
    runtime.publisher().publish(module.TxSeen(chain_id=chain, sender=sender, seq=seq, note=note))


def publish_token(runtime: Any, token: str, seq: int, chain: int = 1, note: str | None = None) -> None:
    module = runtime.classes.module
    runtime.publisher().publish(module.TokenMoved(chain_id=chain, token=token, seq=seq, note=note))


def test_every_event_reaches_every_subscribed_group(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    producer = bus.runtime()
    expected: dict[str, set[str]] = {"tx.seen": set(), "token.moved": set()}
    for index in range(5000):
        chain = (1, 138)[index % 2]
        module = producer.classes.module
        tx = producer.publisher().publish(module.TxSeen(chain_id=chain, sender=f"s{index % 50}", seq=index))
        token = producer.publisher().publish(module.TokenMoved(chain_id=chain, token=f"t{index % 40}", seq=index))
        expected["tx.seen"].add(str(tx.event_id))
        expected["token.moved"].add(str(token.event_id))
    assert producer.publisher().flush(60) == 0
    subscriptions = {"alpha": ("tx.seen", "token.moved"), "beta": ("tx.seen",), "gamma": ("token.moved",)}
    seen: dict[str, list[str]] = defaultdict(list)
    threads = []
    for group, events in subscriptions.items():
        consumer = bus.runtime()
        want = sum(len(expected[e]) for e in events)

        def handle(event: Any, group: str = group) -> None:
            seen[group].append(str(event.event_id))

        consumer.register(group, handle)
        runner = consumer.runner(group)
        threads.append(run_in_thread(runner, settled(runner, lambda g=group, w=want: len(seen[g]) >= w), 120))
    for thread in threads:
        thread.join(150)
    for group, events in subscriptions.items():
        wanted = set().union(*(expected[e] for e in events))
        assert set(seen[group]) == wanted, f"{group}: {len(wanted - set(seen[group]))} events lost"


def test_a_duplicate_reaches_the_handler_once(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    module = runtime.classes.module
    identity = uuid.uuid4()
    for _ in range(3):
        runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1), event_id=identity)
    runtime.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=2))
    assert runtime.publisher().flush(30) == 0
    handled: list[Any] = []
    runtime.register("gamma", handled.append)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: runner.handled >= 4), timeout=60)
    assert sorted(e.payload.seq for e in handled) == [1, 2]


@pytest.mark.parametrize("concurrency", [8, 0], ids=["workers", "inline"])
def test_failing_twice_is_retried_after_1s_and_2s_and_handled_once(make_bus: Callable[..., Bus],
                                                                   concurrency: int) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    publish_token(runtime, "flaky", 1, note="flaky")
    assert runtime.publisher().flush(30) == 0
    attempts: list[float] = []
    handled: list[Any] = []

    def handle(event: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise RuntimeError(f"attempt {len(attempts)} fails")
        handled.append(event)

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma", concurrency=concurrency)
    runner.run(until=settled(runner, lambda: bool(handled)), timeout=60)
    assert len(handled) == 1 and len(attempts) == 3
    first, second = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert 0.9 <= first <= 1.9, first
    assert 1.9 <= second <= 3.2, second


def test_always_failing_goes_to_the_dead_letter_queue_after_3_retries(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(retry_initial="200ms")
    runtime = bus.runtime()
    publish_token(runtime, "doomed", 7, chain=138)
    publish_tx(bus, runtime, "doomed-sender", 7, chain=138)
    assert runtime.publisher().flush(30) == 0
    attempts: dict[str, int] = defaultdict(int)

    def handle(event: Any) -> None:
        attempts[event.event_type] += 1
        raise ValueError("never works")

    runtime.register("alpha", handle)
    runner = runtime.runner("alpha")
    reader = runtime.transport.open_dead_letters(bus.topology.group("alpha"))
    runner.run(until=settled(runner, lambda: runner.handled >= 2 and sum(attempts.values()) >= 8), timeout=60)
    letters = reader.browse(10, 10)
    reader.close()
    assert attempts == {"token.moved": 4, "tx.seen": 4}  # the first attempt and exactly 3 retries each
    assert sorted(letter.headers[H.ORIGINAL_TOPIC] for letter in letters) == sorted(
        [bus.topology.event_topic("token.moved", 138).topic, bus.topology.event_topic("tx.seen", 138).topic])
    for letter in letters:
        assert letter.headers[H.ATTEMPT] == "4"
        assert letter.headers[H.GROUP] == "alpha"
        assert letter.headers[H.ERROR_CLASS] == "ValueError"
        assert letter.headers[H.ERROR_MESSAGE] == "never works"
        assert letter.headers[H.DEAD_LETTER_REASON] == H.REASON_MAX_RETRIES
        assert letter.headers[H.FIRST_FAILURE] < letter.headers[H.LAST_FAILURE]
        assert H.ORIGINAL_PARTITION in letter.headers and H.ORIGINAL_OFFSET in letter.headers


def test_a_poison_message_is_dead_lettered_without_retries(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    raw = runtime.transport.open_publisher("test")
    topic = bus.topology.event_topic("token.moved", 1)
    raw.publish(topic, "k", b'{"event_type": "token.moved", "not": "an envelope"}')
    raw.publish(topic, "k", b"\xff not json")
    assert raw.flush(30) == 0
    raw.close()
    publish_token(runtime, "k", 3)
    assert runtime.publisher().flush(30) == 0
    handled: list[Any] = []
    runtime.register("gamma", handled.append)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: runner.handled >= 3), timeout=60)
    reader = runtime.transport.open_dead_letters(bus.topology.group("gamma"))
    letters = reader.browse(10, 10)
    reader.close()
    assert [e.payload.seq for e in handled] == [3]
    assert len(letters) == 2
    for letter in letters:
        assert letter.headers[H.DEAD_LETTER_REASON] == H.REASON_POISON
        assert letter.headers[H.ATTEMPT] == "0"
        assert letter.headers[H.ERROR_CLASS].endswith("ValidationError")


@pytest.mark.parametrize("concurrency", [8, 0], ids=["workers", "inline"])
def test_an_ordered_key_waits_for_its_retry_while_other_keys_flow(make_bus: Callable[..., Bus],
                                                                  concurrency: int) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    for seq in range(4):
        publish_tx(bus, runtime, "slow-key", seq, note="fail-once" if seq == 0 else None)
    for seq in range(20):
        publish_tx(bus, runtime, f"other-{seq % 5}", seq)
    assert runtime.publisher().flush(30) == 0
    order: list[tuple[str, int, float]] = []
    failed: set[int] = set()

    def handle(event: Any) -> None:
        payload = event.payload
        if payload.note == "fail-once" and payload.seq not in failed:
            failed.add(payload.seq)
            raise RuntimeError("first attempt fails")
        order.append((payload.sender, payload.seq, time.monotonic()))

    runtime.register("beta", handle)
    runner = runtime.runner("beta", concurrency=concurrency)
    runner.run(until=settled(runner, lambda: len(order) >= 24), timeout=60)
    slow = [(seq, at) for sender, seq, at in order if sender == "slow-key"]
    others = [at for sender, _, at in order if sender != "slow-key"]
    assert [seq for seq, _ in slow] == [0, 1, 2, 3]  # log order, also across the retry
    assert len(others) == 20
    assert max(others) < slow[0][1], "other keys waited for the retrying key"
    assert slow[0][1] - min(others) >= 0.5  # the retry came about 1 s later
