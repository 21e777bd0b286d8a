"""Conformance: the same guarantees on every transport (in-process consumers)."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from topologies import Bus

from topo.core import headers as H
from topo.runtime.runner import GroupRunner

pytestmark = pytest.mark.timeout(180)

# Retry due times are whole milliseconds of the wall clock (RabbitMQ: the wait queue's TTL); the
# test measures with the monotonic clock. Only this rounding separates a due time from its delay.
CLOCK_SLACK = 0.05


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

        def enough(group: str = group, want: int = want) -> bool:
            return len(seen[group]) >= want

        threads.append(run_in_thread(runner, settled(runner, enough), 120))
    for thread in threads:
        thread.join(150)
    for group, events in subscriptions.items():
        wanted = set().union(*(expected[e] for e in events))
        assert set(seen[group]) == wanted, f"{group}: {len(wanted - set(seen[group]))} events lost"


def test_a_duplicate_reaches_the_handler_once(make_bus: Callable[..., Bus], dedup: dict[str, Any]) -> None:
    bus = make_bus(groups={"gamma": {"dedup": dedup}})
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


def write_effect(transaction: Any, table: str, event_id: str, seq: int) -> None:
    """One row per handled event, written through the store's transaction (SQLite or psycopg)."""
    if isinstance(transaction, sqlite3.Connection):
        transaction.execute(f"CREATE TABLE IF NOT EXISTS {table} (event_id TEXT, seq INTEGER)")
        transaction.execute(f"INSERT INTO {table} VALUES (?, ?)", (event_id, seq))
    else:
        transaction.execute(f"CREATE TABLE IF NOT EXISTS {table} (event_id text, seq integer)")
        transaction.execute(f"INSERT INTO {table} VALUES (%s, %s)", (event_id, seq))


def read_effects(dedup: dict[str, Any], table: str) -> list[tuple[str, int]]:
    if dedup["store"] == "sqlite":
        with sqlite3.connect(dedup["path"]) as connection:
            return list(connection.execute(f"SELECT event_id, seq FROM {table}"))
    import psycopg

    with psycopg.connect(dedup["dsn"]) as connection:
        return [(str(a), int(b)) for a, b in connection.execute(f"SELECT event_id, seq FROM {table}")]


@pytest.mark.parametrize("concurrency", [8, 0], ids=["workers", "inline"])
def test_effects_written_through_the_store_transaction_happen_once_and_a_failure_undoes_only_its_own(
        make_bus: Callable[..., Bus], dedup: dict[str, Any], concurrency: int) -> None:
    if dedup["store"] == "memory":
        pytest.skip("not applicable: the memory store shares no transaction")
    table = "effects" if dedup["store"] == "sqlite" else f"effects_{dedup['table']}"
    bus = make_bus(groups={"gamma": {"dedup": dedup}}, retry_initial="100ms")
    runtime = bus.runtime()
    module = runtime.classes.module
    ids: dict[str, int] = {}
    for seq in range(300):
        note = "flaky" if seq % 50 == 7 else None
        identity = uuid.uuid4()
        copies = 2 if seq % 10 == 3 else 1  # redeliveries of the same event
        for _ in range(copies):
            runtime.publisher().publish(module.TokenMoved(chain_id=1, token=f"t{seq % 7}", seq=seq, note=note),
                                        event_id=identity)
        ids[str(identity)] = seq
    assert runtime.publisher().flush(30) == 0
    calls: list[int] = []

    def handle(event: Any, context: Any) -> None:
        write_effect(context.transaction, table, str(event.event_id), event.payload.seq)
        calls.append(event.payload.seq)
        if event.payload.note == "flaky" and context.attempt == 1:
            raise RuntimeError("fails after writing: the write must be rolled back")

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma", concurrency=concurrency)
    flaky = sum(1 for seq in ids.values() if seq % 50 == 7)
    runner.run(until=settled(runner, lambda: len(calls) >= len(ids) + flaky), timeout=90)
    effects = read_effects(dedup, table)
    assert sorted(effects) == sorted((i, s) for i, s in ids.items()), (
        f"{len(effects)} rows for {len(ids)} events: each event's write exactly once, the failed attempts' none")
    assert len(calls) == len(ids) + flaky, "a duplicate reached the handler"


def recorded_retries(runtime: Any) -> list[tuple[float, dict[str, str]]]:
    """Every retry the consumer core hands its transport: (delay, headers of the retry copy).

    The transport still sends each copy; the record shows which delay the core asked for, so a
    test checks the schedule itself instead of a wall-clock window around it."""
    asked: list[tuple[float, dict[str, str]]] = []
    transport = runtime.transport
    open_consumer = transport.open_consumer

    def opening(group: Any, options: Any) -> Any:
        consumer = open_consumer(group, options)
        retry_later = consumer.retry_later

        def recording(delivery: Any, delay_seconds: float, headers: Any) -> None:
            asked.append((delay_seconds, dict(headers)))
            retry_later(delivery, delay_seconds, headers)

        consumer.retry_later = recording
        return consumer

    transport.open_consumer = opening
    return asked


@pytest.mark.parametrize("concurrency", [8, 0], ids=["workers", "inline"])
def test_failing_twice_is_retried_after_1s_and_2s_and_handled_once(make_bus: Callable[..., Bus],
                                                                   concurrency: int) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    publish_token(runtime, "flaky", 1, note="flaky")
    assert runtime.publisher().flush(30) == 0
    retries = recorded_retries(runtime)
    attempts: list[tuple[int, float]] = []  # (the attempt the context reports, when it started)
    handled: list[Any] = []

    def handle(event: Any, context: Any) -> None:
        attempts.append((context.attempt, time.monotonic()))
        if len(attempts) <= 2:
            raise RuntimeError(f"attempt {len(attempts)} fails")
        handled.append(event)

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma", concurrency=concurrency)
    runner.run(until=settled(runner, lambda: bool(handled)), timeout=60)
    assert len(handled) == 1 and [attempt for attempt, _ in attempts] == [1, 2, 3]
    # The schedule: exponential from 1s, recorded on each retry copy.
    assert [(delay, headers[H.RETRY_DELAY], headers[H.ATTEMPT]) for delay, headers in retries] == [
        (1.0, "1", "1"), (2.0, "2", "2")]
    # And the transport keeps it: a retry never comes before its delay. Lower bounds only: a
    # loaded machine makes a retry later, never earlier.
    waited = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    assert waited[0] >= 1.0 - CLOCK_SLACK and waited[1] >= 2.0 - CLOCK_SLACK, waited


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
    # A 3 s retry: twenty trivial events of other keys are handled well within it, even on a
    # loaded machine, so "the others did not wait" is an ordering, not a race.
    bus = make_bus(retry_initial="3s")
    runtime = bus.runtime()
    for seq in range(4):
        publish_tx(bus, runtime, "slow-key", seq, note="fail-once" if seq == 0 else None)
    for seq in range(20):
        publish_tx(bus, runtime, f"other-{seq % 5}", seq)
    assert runtime.publisher().flush(30) == 0
    order: list[tuple[str, int, float]] = []
    failed: dict[int, float] = {}  # seq -> when its first attempt failed

    def handle(event: Any) -> None:
        payload = event.payload
        if payload.note == "fail-once" and payload.seq not in failed:
            failed[payload.seq] = time.monotonic()
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
    assert slow[0][1] - failed[0] >= 3.0 - CLOCK_SLACK, "the key was retried before its delay"


def test_exactly_once_group_commits_offsets_and_copies_in_transactions(make_bus: Callable[..., Bus],
                                                                       transport_kind: str,
                                                                       dedup: dict[str, Any]) -> None:
    if transport_kind != "kafka":
        pytest.skip("not applicable: exactly-once is Kafka's (transactions); "
                    "other transports run such groups at-least-once")
    bus = make_bus(groups={"gamma": {"delivery": "exactly_once", "dedup": dedup}}, retry_initial="100ms")
    runtime = bus.runtime()
    for seq in range(50):
        publish_token(runtime, f"t{seq % 5}", seq, note="fail" if seq == 7 else None)
    assert runtime.publisher().flush(30) == 0
    handled: list[int] = []

    def handle(event: Any) -> None:
        if event.payload.note == "fail":
            raise RuntimeError("always")
        handled.append(event.payload.seq)

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: runner.handled >= 53), timeout=60)  # 49 + 3 retries + dead letter
    assert sorted(handled) == [s for s in range(50) if s != 7]
    reader = runtime.transport.open_dead_letters(bus.topology.group("gamma"))
    letters = reader.browse(10, 10)  # read_committed: visible only because the transaction committed
    reader.close()
    assert [letter.headers[H.ATTEMPT] for letter in letters] == ["4"]
    # Markers behind everything on each key's partition: a second member reaches them only after
    # every event whose offset was not committed, so "nothing before the markers" is an ordering.
    markers = set(range(100, 105))
    for seq in markers:
        publish_token(runtime, f"t{seq % 5}", seq)
    assert runtime.publisher().flush(30) == 0
    again = bus.runtime()
    late: list[int] = []
    again.register("gamma", lambda event: late.append(event.payload.seq))
    second = again.runner("gamma")
    second.run(until=settled(second, lambda: markers <= set(late)), timeout=60)
    assert sorted(late) == sorted(markers), "offsets committed in the transactions: nothing is redelivered"


def test_metrics_count_every_outcome(make_bus: Callable[..., Bus]) -> None:
    from topo.runtime.metrics import RuntimeMetrics

    bus = make_bus(retry_initial="100ms")
    metrics = RuntimeMetrics(bus.topology)
    runtime = bus.runtime(metrics=metrics)
    module = runtime.classes.module
    identity = uuid.uuid4()
    for _ in range(2):
        runtime.publisher().publish(module.TokenMoved(chain_id=1, token="a", seq=1), event_id=identity)
    runtime.publisher().publish(module.TokenMoved(chain_id=1, token="b", seq=2, note="flaky"))
    raw = runtime.transport.open_publisher("test")
    raw.publish(bus.topology.event_topic("token.moved", 1), "c", b"{}")
    assert raw.flush(30) == 0 and runtime.publisher().flush(30) == 0
    raw.close()
    failures: list[int] = []

    def handle(event: Any) -> None:
        if event.payload.note == "flaky" and not failures:
            failures.append(1)
            raise RuntimeError("once")

    runtime.register("gamma", handle)
    runner = runtime.runner("gamma")
    runner.run(until=settled(runner, lambda: runner.handled >= 5), timeout=60)
    scope = {"topology": bus.topology.name}  # every series carries its topology

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, {**scope, "group": "gamma", "event_type": "token.moved",
                                                         "chain_id": "1", **labels})
        return found or 0.0

    assert value("topo_events_published_total") == 0  # publisher labels carry no group
    assert metrics.registry.get_sample_value("topo_events_published_total",
                                             {**scope, "event_type": "token.moved", "chain_id": "1"}) == 3
    assert value("topo_events_consumed_total") == 2
    assert value("topo_events_duplicates_total") == 1
    assert value("topo_events_failed_total") == 1
    assert value("topo_events_retried_total") == 1
    assert value("topo_events_dead_lettered_total", reason="poison") == 1
    assert value("topo_handler_duration_seconds_count") == 3
    assert metrics.registry.get_sample_value("topo_in_flight_events", {**scope, "group": "gamma"}) == 0
    assert (metrics.registry.get_sample_value("topo_consumer_last_progress_timestamp_seconds",
                                             {**scope, "group": "gamma"})
            or 0) > time.time() - 60


def test_a_slow_handler_is_bounded_by_max_in_flight_and_pauses_streams(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    runtime = bus.runtime()
    for seq in range(300):
        publish_tx(bus, runtime, f"k{seq % 8}", seq)
    assert runtime.publisher().flush(30) == 0
    runner_box: list[GroupRunner] = []
    peaks: list[int] = []
    paused: list[bool] = []
    handled: list[int] = []

    def handle(event: Any) -> None:
        runner = runner_box[0]
        peaks.append(runner.in_flight)
        paused.append(bool(runner.paused_streams))
        time.sleep(0.01)
        handled.append(event.payload.seq)

    runtime.register("alpha", handle)
    runner = runtime.runner("alpha", concurrency=1)  # alpha: max_in_flight 64
    runner_box.append(runner)
    runner.run(until=settled(runner, lambda: len(handled) >= 300), timeout=90)
    assert sorted(handled) == list(range(300))
    assert max(peaks) <= bus.topology.group("alpha").max_in_flight
    assert any(paused), "a saturation lasting over a second paused the streams"
