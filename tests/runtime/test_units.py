"""Broker-free checks of the runtime's pieces: publisher validation, handler resolution, dedup stores."""

from __future__ import annotations

import gc
import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from topologies import compile_topology, document

from topo.runtime.app import Runtime
from topo.runtime.dedup import MemoryStore, SQLiteStore
from topo.runtime.events import EventClasses
from topo.runtime.handlers import HandlerError, HandlerRegistry
from topo.runtime.process import tune_garbage_collector
from topo.runtime.publisher import PublishError
from topo.runtime.runner import UntilTimeout
from topo.runtime.transport import offsets
from topo.runtime.transport.memory import MemoryTransport
from topo.runtime.transport.offsets import OffsetTracker


@pytest.fixture
def app(tmp_path: Path) -> Runtime:
    doc = document(f"u{uuid.uuid4().hex[:6]}")
    doc["events"]["solo.event"] = {"producers": ["x"], "chains": [1], "payload": {"n": "integer"}}
    doc["consumer_groups"]["beta"]["handler"] = "rt_handlers:record"
    doc["consumer_groups"]["alpha"]["subscribes"] = [{"event": "tx.seen", "handler": "rt_handlers:record"},
                                                     "token.moved"]
    topology = compile_topology(doc, tmp_path)
    return Runtime(topology, EventClasses.load(topology, tmp_path), MemoryTransport(topology))


def test_publish_refuses_before_anything_is_sent(app: Runtime) -> None:
    module = app.classes.module
    publisher = app.publisher()
    with pytest.raises(PublishError, match="differs from the payload"):
        publisher.publish(module.TxSeen(chain_id=1, sender="a", seq=1), chain_id=138)
    with pytest.raises(PublishError, match="undeclared event type"):
        publisher.publish({"chain_id": 1}, event_type="no.such")
    with pytest.raises(PublishError, match=r"invalid tx\.seen payload"):
        publisher.publish({"chain_id": 1, "sender": "a", "seq": -5}, event_type="tx.seen")
    with pytest.raises(PublishError, match="chain 138 is not declared"):
        publisher.publish({"chain_id": 138, "n": 1}, event_type="solo.event")
    with pytest.raises(PublishError, match="not a payload class"):
        publisher.publish(module.Metadata(producer="x", version="1"))
    assert all(not records for log in app.transport.broker.logs.values()  # type: ignore[attr-defined]
               for records in log)


def test_published_envelope_round_trips(app: Runtime) -> None:
    module = app.classes.module
    sent = app.publisher().publish({"chain_id": 138, "sender": "0xabc", "seq": 3}, event_type="tx.seen")
    partitions = app.transport.broker.logs[sent.topic.topic]  # type: ignore[attr-defined]
    [record] = [r for log in partitions for r in log]
    envelope = module.ENVELOPES["tx.seen"].model_validate_json(record.body)
    assert envelope.event_id == sent.event_id and envelope.chain_id == 138 and envelope.payload.seq == 3
    assert envelope.metadata.producer == app.producer and envelope.metadata.version == "1.0"
    assert record.key == "0xabc" == sent.key


def test_handler_resolution_order(app: Runtime) -> None:
    import rt_handlers

    registry = HandlerRegistry()
    group = app.topology.group("alpha")
    with pytest.raises(HandlerError, match=r"no handler for token\.moved"):
        registry.resolve(group)

    def default(event: Any) -> None: ...

    def special(event: Any, context: Any) -> None: ...

    registry.register("alpha", default)
    resolved = registry.resolve(group)
    assert resolved["tx.seen"].function is rt_handlers.record  # the subscription's import path wins
    assert resolved["token.moved"].function is default and not resolved["token.moved"].wants_context
    registry.register("alpha", special, "tx.seen")
    resolved = registry.resolve(group)
    assert resolved["tx.seen"].function is special and resolved["tx.seen"].wants_context
    assert registry.resolve(app.topology.group("beta"))["tx.seen"].function is rt_handlers.record


def test_memory_store_is_bounded() -> None:
    store = MemoryStore(capacity=2)
    for name in ("a", "b", "c"):
        with store.processing(name):
            pass
    assert not store.is_processed("a") and store.is_processed("b") and store.is_processed("c")


def test_memory_store_fast_path_is_bounded_after_trim() -> None:
    store = MemoryStore(capacity=3)
    for number in range(10):
        store.add(number, None)  # what the consume loop does per event, trimming per batch
    assert len(store) == 10
    store.trim()
    assert len(store) == 3 and [n for n in range(10) if store.seen(n)] == [7, 8, 9]


@pytest.mark.parametrize("seed", range(40))
def test_offset_tracker_commits_only_a_contiguous_settled_prefix(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random settle orders (one by one and in batches), releases and re-deliveries against a
    model: the committable position is one past the longest settled prefix of what is tracked."""
    monkeypatch.setattr(offsets, "COMPACT_AFTER", 4)  # compaction happens often
    rng = random.Random(seed)
    tracker = OffsetTracker()
    tracked: dict[int, bool] = {}  # the model: offset -> settled
    start = committed = next_offset = 0
    for _ in range(600):
        action = rng.random()
        pending = sorted(o for o, settled in tracked.items() if not settled)
        if action < 0.4:
            batch = list(range(next_offset, next_offset + rng.randint(1, 4)))
            tracker.add_many(batch)
            tracked.update(dict.fromkeys(batch, False))
            next_offset = batch[-1] + 1
        elif action < 0.6 and pending:
            offset = rng.choice(pending)
            tracker.done(offset)
            tracked[offset] = True
        elif action < 0.85 and pending:  # a batch: the next ones in order, or any ascending subset
            in_order = rng.random() < 0.5
            batch = pending[:rng.randint(1, 3)] if in_order else sorted(rng.sample(pending, min(3, len(pending))))
            tracker.done_many(batch)
            tracked.update(dict.fromkeys(batch, True))
        elif action < 0.9 and tracked:  # release from an offset: seek back, re-deliver later
            offset = rng.choice(sorted(tracked))
            tracker.forget_from(offset)
            tracked = {o: s for o, s in tracked.items() if o < offset}
            next_offset = offset
        else:
            tracker.done_many([next_offset + 5])  # never handed out: ignored
            tracker.done_many([o for o, settled in tracked.items() if settled][:1])  # settled again: ignored
        while tracked.get(start, False):
            del tracked[start]
            start += 1
            committed = start
        if committed:
            assert tracker.committable == committed


def test_gc_tuning_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 1000  # modules, classes and the rest of start-up
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_sqlite_store_commits_side_effects_with_the_mark(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite")
    with store.processing("ok") as connection:
        connection.execute("CREATE TABLE effects (v TEXT)")
        connection.execute("INSERT INTO effects VALUES ('kept')")
    with pytest.raises(RuntimeError), store.processing("failed") as connection:
        connection.execute("INSERT INTO effects VALUES ('rolled back')")
        raise RuntimeError("handler failed")
    store.close()
    reopened = SQLiteStore(tmp_path / "state.sqlite")  # survives a restart
    assert reopened.is_processed("ok") and not reopened.is_processed("failed")
    reopened.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as raw:
        assert [row[0] for row in raw.execute("SELECT v FROM effects")] == ["kept"]


def test_async_handlers_and_context(app: Runtime) -> None:
    module = app.classes.module
    app.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1))
    seen: list[tuple[int, int]] = []

    async def handle(event: Any, context: Any) -> None:
        seen.append((event.payload.seq, context.attempt))

    app.register("gamma", handle)
    runner = app.runner("gamma")
    runner.run(until=lambda: bool(seen) and runner.in_flight == 0, timeout=10)
    assert seen == [(1, 1)]


def test_a_condition_never_met_raises_naming_it_and_what_was_handled(app: Runtime) -> None:
    module = app.classes.module
    app.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1))
    app.register("gamma", lambda event: None)
    runner = app.runner("gamma")
    with pytest.raises(UntilTimeout, match=r"gamma: `.*lambda: False.*` \(.*test_units\.py:\d+\) still false "
                                           r"after 0\.2s \(1 deliveries settled, 0 in flight\)"):
        runner.run(until=lambda: False, timeout=0.2)
    assert isinstance(UntilTimeout("x"), TimeoutError)


def test_a_timeout_without_condition_is_a_duration(app: Runtime) -> None:
    app.register("gamma", lambda event: None)
    app.runner("gamma").run(timeout=0.1)  # returns: nothing was awaited


def test_a_crashing_worker_stops_the_group_instead_of_hanging(app: Runtime) -> None:
    module = app.classes.module
    app.publisher().publish(module.TokenMoved(chain_id=1, token="t", seq=1))

    def handle(event: Any) -> None:
        raise SystemExit("a handler must not exit the process from a worker thread")

    app.register("gamma", handle)
    runner = app.runner("gamma", concurrency=8, shutdown_timeout=0.5)  # worker threads from the start
    with pytest.raises(RuntimeError, match="a worker crashed"):
        runner.run(timeout=10)
    reader = app.transport.open_dead_letters(app.topology.group("gamma"))
    assert reader.browse(10, 0) == []  # nothing settled: the event is redelivered after a restart
