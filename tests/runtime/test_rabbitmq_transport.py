"""RabbitMQ transport against a real broker: every test runs in a fresh vhost (`rabbit_vhost`)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pika
import pytest

from tests.support.waiting import wait_until
from topo.core import headers as hdr
from topo.core.model import ConsumerGroup, Topology
from topo.generator.resolve import resolve
from topo.runtime.transport import create
from topo.runtime.transport.base import (
    ConsumeOptions,
    ConsumerTransport,
    Delivery,
    DeliveryReport,
    PublisherTransport,
    StreamId,
    Tail,
    TransportError,
    Unsupported,
)
from topo.runtime.transport.rabbitmq import RabbitHandle, RabbitMQConsumer, RabbitMQTransport
from topo.runtime.transport.rabbitmq.declare import declare
from topo.runtime.transport.rabbitmq.members import share

pytestmark = pytest.mark.rabbitmq


def topology_doc(name: str, url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        "description": "RabbitMQ transport tests",
        "broker": {"kind": "rabbitmq", "rabbitmq": {"url": url, "partitions": 3}},
        "chains": {1: {"name": "ethereum"}, 2: {"name": "polygon"}},
        "defaults": {"retry": {"max_retries": 2, "initial": "1s", "multiplier": 2, "max": "1m"}},
        "events": {
            "order.placed": {"description": "unordered", "producers": ["shop"], "key": "account",
                             "payload": {"account": "string", "n": "integer"}},
            "block.new": {"description": "ordered", "producers": ["indexer"], "key": "number", "ordered": True,
                          "payload": {"number": "integer"}},
        },
        "consumer_groups": {
            "workers": {"subscribes": ["order.placed"]},
            "ledger": {"subscribes": ["block.new"], "partitions": 2},
        },
    }


def provision(topology: Topology, url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declare(connection.channel(), topology)
    finally:
        connection.close()


class Recorder:
    """AssignmentListener that remembers what it was told."""

    def __init__(self) -> None:
        self.assigned: list[StreamId] = []
        self.revoked: list[StreamId] = []
        self.lost: list[StreamId] = []

    def on_assigned(self, streams: Sequence[StreamId]) -> None:
        self.assigned.extend(streams)

    def on_revoked(self, streams: Sequence[StreamId]) -> None:
        self.revoked.extend(streams)

    def on_lost(self, streams: Sequence[StreamId]) -> None:
        self.lost.extend(streams)


class Env:
    def __init__(self, name: str, url: str) -> None:
        self.url = url
        self.topology = resolve(topology_doc(name, url))
        provision(self.topology, url)
        self.transport = create("rabbitmq", self.topology)
        self.closers: list[Callable[[], None]] = []

    @property
    def workers(self) -> ConsumerGroup:
        return self.topology.group("workers")

    def publisher(self) -> PublisherTransport:
        publisher = self.transport.open_publisher("test")
        self.closers.append(publisher.close)
        return publisher

    def consumer(self, group: str = "workers", max_in_flight: int = 30) -> tuple[ConsumerTransport, Recorder]:
        consumer = self.transport.open_consumer(self.topology.group(group), ConsumeOptions(max_in_flight=max_in_flight))
        self.closers.append(consumer.close)
        listener = Recorder()
        consumer.subscribe(listener)
        return consumer, listener

    def publish(self, events: Sequence[tuple[str, int, str, dict[str, Any]]]) -> list[DeliveryReport]:
        """Publish (event, chain, key, payload) tuples and wait for every confirm."""
        publisher = self.publisher()
        reports: list[DeliveryReport] = []
        for event, chain, key, payload in events:
            publisher.publish(self.topology.event_topic(event, chain), key, json.dumps(payload).encode(),
                              {"x-topo-event-id": f"{key}-{payload.get('n', 0)}"}, reports.append)
        assert publisher.flush(10) == 0
        return reports

    def queue_depth(self, queue: str) -> int:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
        finally:
            connection.close()


@pytest.fixture
def env(rabbit_vhost: Any, unique_name: str) -> Iterator[Env]:
    environment = Env(unique_name, rabbit_vhost.url)
    yield environment
    for close in reversed(environment.closers):
        with contextlib.suppress(TransportError):  # a test may have broken it on purpose
            close()
    environment.transport.close()


def poll_until(consumer: ConsumerTransport | Tail, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Poll (never longer than 0.1 s at a time) until `count` deliveries arrived or fail."""
    found: list[Delivery] = []

    def enough() -> bool:
        found.extend(consumer.poll(count - len(found), 0.1))
        return len(found) >= count

    wait_until(enough, timeout, lambda: f"{count} deliveries (got {len(found)})", interval=0)
    return found


def order(key: str, n: int, chain: int = 1) -> tuple[str, int, str, dict[str, Any]]:
    return ("order.placed", chain, key, {"account": key, "n": n})


# --------------------------------------------------------------------------- publishing


def test_publish_reports_confirms_and_unroutable_messages(env: Env) -> None:
    reports = env.publish([order("alice", 1), order("bob", 2, chain=2)])
    assert [(r.destination, r.key, r.error) for r in reports] == [
        ("order.placed.1", "alice", None), ("order.placed.2", "bob", None)]

    publisher = env.publisher()
    returned: list[DeliveryReport] = []
    publisher.send("nobody.listens", "carol", b"{}", None, returned.append)
    publisher.publish(env.topology.event_topic("order.placed", 1), "dave", b"{}", None, returned.append)
    assert publisher.flush(10) == 0
    assert returned[0].destination == "nobody.listens"
    assert returned[0].error is not None and returned[0].error.startswith("unroutable")
    assert returned[1].error is None  # a return is matched to its own message only


def test_published_message_properties(env: Env) -> None:
    env.publish([order("alice", 7)])
    consumer, _ = env.consumer()
    [delivery] = poll_until(consumer, 1)
    assert isinstance(delivery.handle, RabbitHandle)
    properties = delivery.handle.properties
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == "alice-7"
    assert delivery.headers["x-topo-key"] == "alice" == delivery.key
    assert abs(delivery.timestamp - time.time()) < 60
    assert delivery.topic == "order.placed.1"
    assert json.loads(delivery.body) == {"account": "alice", "n": 7}


def test_many_publishes_are_confirmed_asynchronously(env: Env) -> None:
    publisher = env.publisher()
    topic = env.topology.event_topic("order.placed", 1)
    reports: list[DeliveryReport] = []
    unconfirmed: list[int] = []  # published and not yet reported, after each publish
    for n in range(3000):
        publisher.publish(topic, f"k{n % 50}", b'{"n": %d}' % n, None, reports.append)
        unconfirmed.append(n + 1 - len(reports))
    assert publisher.flush(30) == 0
    assert len(reports) == 3000 and all(r.error is None for r in reports)
    # Waiting for each confirm would leave none outstanding after a publish returns; asynchronous
    # tracking lets publishing run ahead of the broker's confirms (a count, not a speed).
    assert max(unconfirmed) >= 10, f"at most {max(unconfirmed)} messages awaited their confirm at once"


# --------------------------------------------------------------------------- consuming


def test_consistent_hash_spreads_keys_and_keeps_each_key_in_one_queue(env: Env) -> None:
    keys = [f"account-{i}" for i in range(60)]
    env.publish([order(key, n, chain=1 + n % 2) for n in range(3) for key in keys])
    consumer, listener = env.consumer(max_in_flight=300)
    deliveries = poll_until(consumer, len(keys) * 3)
    queues = env.workers.rabbitmq.queues
    assert listener.assigned == [(queue, index) for index, queue in enumerate(queues)]
    by_key: dict[str, set[int]] = {}
    for delivery in deliveries:
        assert delivery.source == queues[delivery.partition]
        by_key.setdefault(str(delivery.key), set()).add(delivery.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values()), by_key
    assert {p for partitions in by_key.values() for p in partitions} == {0, 1, 2}
    per_key = [json.loads(d.body)["n"] for d in deliveries if d.key == "account-0"]
    assert per_key == [0, 1, 2]  # one queue, in publish order
    consumer.ack(deliveries)


def test_ack_removes_and_release_requeues(env: Env) -> None:
    env.publish([order("alice", 1)])
    consumer, _ = env.consumer()
    [first] = poll_until(consumer, 1)
    assert not first.redelivered
    consumer.release([first])
    [again] = poll_until(consumer, 1)
    assert again.redelivered and again.body == first.body and again.stream == first.stream
    consumer.ack([again])
    consumer.close()
    assert env.queue_depth(again.source) == 0


def test_prefetch_bounds_unsettled_deliveries(env: Env) -> None:
    env.publish([order(f"k{i}", i) for i in range(60)])
    consumer, _ = env.consumer(max_in_flight=6)  # 2 per work queue
    got: list[Delivery] = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        got.extend(consumer.poll(100, 0.1))
    assert len(got) <= 6
    consumer.ack(got)
    assert poll_until(consumer, 1)


def test_retry_later_comes_back_through_the_wait_queue_after_the_delay(env: Env) -> None:
    env.publish([order("alice", 1, chain=2)])
    consumer, _ = env.consumer()
    [first] = poll_until(consumer, 1)
    failure = {hdr.ATTEMPT: "1", hdr.GROUP: "workers", hdr.ERROR_CLASS: "ValueError"}
    sent = time.monotonic()
    consumer.retry_later(first, 1.0, failure)
    [copy] = poll_until(consumer, 1, timeout=10)  # bounds the delay from above
    waited = time.monotonic() - sent
    assert waited >= 0.95, f"the copy came back after {waited:.2f}s, before its 1 s delay"
    assert copy.body == first.body and copy.key == "alice"
    assert copy.stream == first.stream  # re-hashed on x-topo-key into the same work queue
    assert copy.topic == "order.placed.2"  # the original routing key, not the wait queue's name
    assert copy.headers[hdr.ATTEMPT] == "1" and copy.headers[hdr.ORIGINAL_TOPIC] == "order.placed.2"
    assert "x-death" not in copy.headers
    assert isinstance(copy.handle, RabbitHandle) and copy.handle.properties.message_id == "alice-1"
    consumer.ack([copy])
    assert env.queue_depth(env.workers.rabbitmq.retry_queues[0].name) == 0

    with pytest.raises(Unsupported, match="no wait queue for a 3s delay"):
        consumer.retry_later(copy, 3.0, failure)


def test_retry_later_is_refused_without_wait_queues(env: Env) -> None:
    publisher = env.publisher()
    publisher.publish(env.topology.event_topic("block.new", 1), "5", b'{"number": 5}')
    assert publisher.flush(10) == 0
    consumer, _ = env.consumer("ledger")
    [delivery] = poll_until(consumer, 1)
    with pytest.raises(Unsupported, match="no retry wait queues"):
        consumer.retry_later(delivery, 1.0, {})
    consumer.release([delivery])


def test_dead_letter_lands_in_the_dlq_with_headers(env: Env) -> None:
    env.publish([order("alice", 1), order("bob", 2)])
    consumer, _ = env.consumer()
    deliveries = sorted(poll_until(consumer, 2), key=lambda d: str(d.key))
    for delivery in deliveries:
        consumer.dead_letter(delivery, {hdr.DEAD_LETTER_REASON: hdr.REASON_POISON, hdr.GROUP: "workers",
                                        hdr.ORIGINAL_PARTITION: str(delivery.partition)})
    consumer.close()
    assert all(env.queue_depth(q) == 0 for q in env.workers.rabbitmq.queues)

    reader = env.transport.open_dead_letters(env.workers)
    env.closers.append(reader.close)
    browsed = reader.browse(10, 5)
    assert sorted(str(d.key) for d in browsed) == ["alice", "bob"]
    for letter in browsed:
        assert letter.headers[hdr.DEAD_LETTER_REASON] == "poison"
        assert letter.headers[hdr.ORIGINAL_TOPIC] == "order.placed.1"
        assert letter.topic == "order.placed.1"
        assert letter.source == env.workers.rabbitmq.dlq_queue
    assert len(reader.browse(10, 1)) == 2  # browsing is non-destructive

    taken = reader.take(1, 5)
    assert len(taken) == 1
    reader.done(taken)
    assert len(reader.browse(10, 1)) == 1


def test_broker_dead_letters_a_crash_loop_with_its_original_routing_key(env: Env) -> None:
    env.publish([order("alice", 1)])
    consumer, _ = env.consumer()
    limit = env.workers.rabbitmq.delivery_limit
    for _ in range(limit + 1):  # x-delivery-limit counts returns; one more than the limit dead-letters
        consumer.release(poll_until(consumer, 1))
    assert consumer.poll(1, 0.2) == []  # the release is sent by the next poll; nothing comes back
    reader = env.transport.open_dead_letters(env.workers)
    env.closers.append(reader.close)
    [letter] = reader.browse(10, 5)
    assert letter.topic == "order.placed.1" and letter.key == "alice"


def test_poll_keeps_the_connection_alive_past_the_heartbeat(env: Env) -> None:
    url = env.url + ("&" if "?" in env.url else "?") + urllib.parse.urlencode({"heartbeat": 2})
    transport = RabbitMQTransport(env.topology, url=url)
    env.publish([order("alice", 1)])
    consumer = transport.open_consumer(env.workers, ConsumeOptions(max_in_flight=10))
    env.closers.append(consumer.close)
    consumer.subscribe(Recorder())
    [held] = poll_until(consumer, 1)
    holding_until = time.monotonic() + 6  # 3 heartbeat intervals: the broker drops a silent client
    while time.monotonic() < holding_until:
        assert consumer.poll(10, 0.1) == []  # a busy loop still polls every 0.1 s
    consumer.ack([held])
    consumer.poll(10, 0.2)
    consumer.close()
    assert env.queue_depth(held.source) == 0  # the ack landed: the connection survived


def test_connection_loss_is_reported(env: Env, rabbitmq_management: Any) -> None:
    consumer, listener = env.consumer()
    consumer.poll(1, 0.1)
    api = rabbitmq_management

    def our_connections() -> list[dict[str, Any]]:
        found = api.get(f"/api/vhosts/{api.quote(env.topology.name)}/connections")
        return [c for c in found if "consumer workers" in c.get("client_properties", {}).get("connection_name", "")]

    def listed() -> list[dict[str, Any]]:  # the management API lists connections with a short delay
        consumer.poll(1, 0.1)
        return our_connections()

    for connection in wait_until(listed, 10, "the consumer connection listed by the management API", interval=0):
        api.delete(f"/api/connections/{api.quote(connection['name'])}")
    with pytest.raises(TransportError, match="gone"):
        def reported() -> bool:
            consumer.poll(1, 0.1)  # raises once the transport notices the loss
            return False

        wait_until(reported, 10, "the connection loss reported", interval=0)
    assert listener.lost == listener.assigned
    consumer.release([])  # releasing after loss is a no-op: the broker requeued everything


def test_wakeup_interrupts_a_blocked_poll(env: Env) -> None:
    import threading

    consumer, _ = env.consumer()
    consumer.poll(1, 0.1)
    woken = threading.Event()

    def wake() -> None:
        woken.set()
        consumer.wakeup()

    threading.Timer(0.2, wake).start()
    # A 60 s poll: only the wakeup ends it early (the test's own timeout would end it otherwise),
    # so returning at all, empty, after the wakeup, shows it was interrupted.
    assert consumer.poll(1, 60.0) == []
    assert woken.is_set()


def test_tail_sees_new_events_without_touching_group_queues(env: Env) -> None:
    tail = env.transport.open_tail([env.topology.event_topic("order.placed", 2)])
    env.closers.append(tail.close)
    env.publish([order("alice", 1, chain=1), order("bob", 2, chain=2)])
    [seen] = poll_until(tail, 1)
    assert seen.key == "bob" and seen.topic == "order.placed.2"
    assert sum(env.queue_depth(q) for q in env.workers.rabbitmq.queues) == 2


def test_consumer_publish_is_confirmed(env: Env) -> None:
    consumer, _ = env.consumer()
    consumer.publish(env.topology.event_topic("order.placed", 1), "erin", b'{"n": 1}')
    [delivery] = poll_until(consumer, 1)
    assert delivery.key == "erin"


def test_exactly_once_is_refused(env: Env) -> None:
    assert env.transport.supports_exactly_once is False
    with pytest.raises(Unsupported, match="exactly-once"):
        env.transport.open_consumer(env.workers, ConsumeOptions(max_in_flight=10, exactly_once=True))


def test_missing_queues_are_named(env: Env, unique_name: str) -> None:
    doc = topology_doc(unique_name + "-x", env.url)
    unprovisioned = resolve(doc)
    consumer = create("rabbitmq", unprovisioned).open_consumer(unprovisioned.group("workers"),
                                                               ConsumeOptions(max_in_flight=10))
    env.closers.append(consumer.close)
    with pytest.raises(TransportError, match="topo apply"):
        consumer.subscribe(Recorder())


# --------------------------------------------------------------------------- scaling out (ordered groups)


def test_share_splits_queues_by_rank() -> None:
    assert share([0], 0, 3) == [0, 1, 2]
    assert share([0, 1], 0, 3) == [0, 2] and share([0, 1], 1, 3) == [1]
    assert share([0, 4, 7], 7, 3) == [2]  # ranks, not slot numbers
    assert share([0, 1, 2, 3], 3, 3) == []  # more processes than queues: a standby


def test_a_second_member_takes_over_queues_without_reordering_keys(env: Env) -> None:
    publisher = env.publisher()
    keys = [str(k) for k in range(20)]
    total = 600
    for n in range(total):
        key = keys[n % len(keys)]
        publisher.publish(env.topology.event_topic("block.new", 1), key, json.dumps({"number": n}).encode())
    assert publisher.flush(30) == 0

    first, first_listener = env.consumer("ledger", max_in_flight=20)
    handled: list[tuple[str, str, int]] = []  # (member, key, number) in handling order

    def step(name: str, consumer: ConsumerTransport, most: int = 50) -> None:
        batch = consumer.poll(most, 0.05)
        handled.extend((name, str(d.key), json.loads(d.body)["number"]) for d in batch)
        consumer.ack(batch)

    def first_alone() -> bool:
        step("first", first)
        return len(handled) >= 100

    wait_until(first_alone, 30, lambda: f"the first member to handle 100 (handled {len(handled)})", interval=0)
    second, second_listener = env.consumer("ledger", max_in_flight=20)

    def both(most: int) -> Callable[[], bool]:
        def stepped() -> bool:
            step("first", first, most)
            step("second", second, most)
            return True

        return stepped

    slowly, quickly = both(1), both(50)
    # Slow handling: the queue is handed over mid-stream.
    wait_until(lambda: slowly() and first_listener.revoked, 30, "the first member to hand a queue over", interval=0)
    wait_until(lambda: quickly() and len({n for _, _, n in handled}) >= total, 60,
               lambda: f"every event handled (handled {len(handled)} of {total})", interval=0)
    assert {member for member, _, _ in handled} == {"first", "second"}
    assert first_listener.revoked and set(first_listener.revoked) <= set(second_listener.assigned)
    for key in keys:
        numbers = [n for _, k, n in handled if k == key]
        assert numbers == sorted(numbers), f"key {key} out of order"
    everything = [(q, i) for i, q in enumerate(env.topology.group("ledger").rabbitmq.queues)]
    assert sorted(first.assignment() + second.assignment()) == everything

    second.close()  # its slot is freed with its connection: the first member takes every queue again

    def first_takes_all() -> bool:
        step("first", first)
        return first.assignment() == everything

    wait_until(first_takes_all, 15, lambda: f"the first member to take every queue (has {first.assignment()})",
               interval=0)


def test_handler_threads_publish_through_the_loop_thread(env: Env) -> None:
    import threading

    consumer, _ = env.consumer()
    errors: list[BaseException] = []

    def handler() -> None:
        try:
            consumer.publish(env.topology.event_topic("order.placed", 2), "frank", b'{"n": 2}')
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=handler)
    worker.start()
    [delivery] = poll_until(consumer, 1)  # the loop thread keeps polling; the publish runs inside
    worker.join(5)
    assert not errors and delivery.key == "frank" and delivery.topic == "order.placed.2"


def test_release_brings_deliveries_back_in_their_original_order(env: Env) -> None:
    env.publish([order("alice", n) for n in range(6)])
    consumer, _ = env.consumer(max_in_flight=30)
    first = poll_until(consumer, 2, timeout=5)  # the other four wait in the transport's buffer
    consumer.release(first)
    again = poll_until(consumer, 6)
    assert [json.loads(d.body)["n"] for d in again] == [0, 1, 2, 3, 4, 5]
    consumer.ack(again)


def test_an_unreachable_broker_is_named_without_credentials(env: Env) -> None:
    transport = RabbitMQTransport(env.topology, url="amqp://someone:secret@127.0.0.1:1/%2F")
    with pytest.raises(TransportError, match=r"127\.0\.0\.1:1\b") as publisher_error:
        transport.open_publisher("test")
    with pytest.raises(TransportError, match="RABBITMQ_URL") as consumer_error:
        transport.open_consumer(env.workers, ConsumeOptions(max_in_flight=10))
    assert "secret" not in str(publisher_error.value) + str(consumer_error.value)


def test_out_of_order_acks_ack_each_message_once(env: Env) -> None:
    env.publish([order("alice", n) for n in range(4)])
    consumer, listener = env.consumer()
    d1, d2, d3, d4 = poll_until(consumer, 4)
    for batch in ([d2, d4], [d1], [d3]):
        consumer.ack(batch)
    consumer.poll(10, 0.3)  # an unknown or twice-acked tag would close the channel (406) by now
    assert listener.lost == [] and len(consumer.assignment()) == 3
    consumer.close()
    assert env.queue_depth(d1.source) == 0


class HoldingCore:
    """A stand-in for the consumer core on one member: keeps the last `hold` deliveries of each
    stream unacked (slow handlers), records what it acks (handled) in order, and checks the
    revocation contract."""

    def __init__(self, name: str, consumer: ConsumerTransport, handled: list[tuple[str, str, int]],
                 hold: int = 0) -> None:
        self.name = name
        self.consumer = consumer
        self.handled = handled
        self.hold = hold
        self.held: list[Delivery] = []
        self.revoked: list[StreamId] = []
        self.held_at_revocation: list[Delivery] = []
        self.on_revoking: Callable[[], None] = lambda: None

    def on_assigned(self, streams: Sequence[StreamId]) -> None:
        """Nothing to prepare."""

    def on_revoked(self, streams: Sequence[StreamId]) -> None:
        self.held_at_revocation.extend(d for d in self.held if d.stream in streams)
        self.revoked.extend(streams)
        self.on_revoking()

    def on_lost(self, streams: Sequence[StreamId]) -> None:
        raise AssertionError(f"{self.name} lost {streams}")

    def step(self, most: int = 50) -> None:
        self.held.extend(self.consumer.poll(most, 0.05))
        total = Counter(d.stream for d in self.held)
        seen: Counter[StreamId] = Counter()
        done: list[Delivery] = []
        kept: list[Delivery] = []
        for delivery in self.held:
            seen[delivery.stream] += 1
            (done if seen[delivery.stream] <= total[delivery.stream] - self.hold else kept).append(delivery)
        self.held = kept
        if done:
            self.handled.extend((self.name, str(d.key), json.loads(d.body)["number"]) for d in done)
            self.consumer.ack(done)

    def finish(self) -> None:
        self.hold = 0

    def give_back(self) -> None:
        """Release what is held (abandoned work): it must come back, in order, before newer work."""
        self.consumer.release(self.held)
        self.held, self.hold = [], 0


@pytest.mark.parametrize("held", ["finished", "released"])
def test_a_hand_over_racing_new_messages_keeps_every_key_in_order(env: Env, held: str) -> None:
    """The first member holds unacked deliveries when the second joins (then finishes or releases
    them), and events keep arriving exactly while it hands a queue over. RabbitMQ 3.10 gives the
    next single-active consumer the queue's ready messages before anything the old one gives
    back, so a hand-over that requeued (or dropped) even one delivery shows up as a key out of
    order."""
    publisher = env.publisher()
    keys = [str(k) for k in range(10)]
    topic = env.topology.event_topic("block.new", 1)
    published = 0

    def publish(count: int) -> None:
        nonlocal published
        for n in range(published, published + count):
            publisher.publish(topic, keys[n % len(keys)], json.dumps({"number": n}).encode())
        published += count
        assert publisher.flush(30) == 0

    def member(name: str, hold: int = 0) -> HoldingCore:
        consumer = env.transport.open_consumer(env.topology.group("ledger"), ConsumeOptions(max_in_flight=20))
        env.closers.append(consumer.close)  # prefetch 10 per work queue
        core = HoldingCore(name, consumer, handled, hold)
        consumer.subscribe(core)
        return core

    def handing_over(core: HoldingCore) -> bool:  # white box: the transport started a hand-over
        assert isinstance(core.consumer, RabbitMQConsumer)
        return any(s.draining_since is not None for s in core.consumer._subscriptions.values())

    publish(200)
    handled: list[tuple[str, str, int]] = []  # (member, key, number) in handling order
    first = member("first", hold=5)
    def drained() -> bool:  # both queues, five deliveries of each still unacked
        first.step()
        return len(handled) >= 190

    wait_until(drained, 30, lambda: f"the first member to handle 190 (handled {len(handled)})", interval=0)
    assert len(first.held) == 10

    # Events published while the hand-over is under way: a member that still received some
    # would give them back, behind the ones published after them.
    first.on_revoking = lambda: publish(100)
    second = member("second")
    def handed_over() -> bool:
        if handing_over(first) and first.hold:  # slow handlers end only once the hand-over started
            if held == "finished":
                first.finish()
            else:
                first.give_back()
        first.step(1)
        second.step(1)
        return bool(first.revoked)

    wait_until(handed_over, 30, "the first member to hand a queue over", interval=0)
    assert first.held_at_revocation == [], "on_revoked came before the core settled the queue"

    def all_handled() -> bool:
        first.step()
        second.step()
        return len(handled) >= published

    wait_until(all_handled, 30, lambda: f"every event handled (handled {len(handled)} of {published})", interval=0)
    assert {member for member, _, _ in handled} == {"first", "second"}
    for key in keys:
        numbers = [n for _, k, n in handled if k == key]
        assert numbers == list(range(int(key), published, len(keys))), f"key {key}: {numbers}"
    for core in (first, second):
        core.finish()
        core.step()
    assert env.queue_depth(first.revoked[0][0]) == 0
