"""RabbitMQ transport versus raw pika, same broker, same payload bytes, same settings.

    python -m bench.runtime_rabbitmq [--events 20000] [--rounds 2]

Runs in a throwaway vhost (created and deleted through the management API) with the topology
plumbing declared by `rabbitmq_declare`. Measures:

* publish: raw pika `SelectConnection` in one thread, persistent messages, `mandatory`, publisher
  confirms tracked asynchronously with the same window of unconfirmed messages, versus
  `RabbitMQPublisher.publish` + `flush` (every message confirmed before the clock stops);
* consume: raw `BlockingConnection` consuming the group's work queues with manual ack per message
  and `json.loads` of each body, versus `RabbitMQConsumer.poll` + `json.loads` + `ack`, same
  prefetch in total;
* end-to-end latency through the transport at a paced rate (publish to `poll` return).

The best of `--rounds` runs of each side is kept, alternating raw and transport so that noise from
other processes on the machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika
import requests

from topo.generator.model import Topology
from topo.generator.resolve import resolve
from topo.runtime.transport.base import ConsumeOptions, DeliveryReport, StreamId
from topo.runtime.transport.rabbitmq import RabbitMQTransport, message_properties
from topo.runtime.transport.rabbitmq_declare import declare

WINDOW = 10_000  # unconfirmed messages in flight, both sides
PREFETCH_PER_QUEUE = 256
PARTITIONS = 3
KEYS = 500


def payload(n: int) -> bytes:
    """A ~350-byte envelope, like a transaction event."""
    envelope = {
        "event_id": str(uuid.UUID(int=n)),
        "event_type": "transaction.confirmed",
        "timestamp": "2024-01-01T00:00:00.000Z",
        "chain_id": 1,
        "metadata": {"producer": "bench", "version": "1.0"},
        "payload": {"hash": "0x" + f"{n:064x}", "block_number": n, "from_address": "0x" + f"{n % KEYS:040x}",
                    "status": "success", "value": str(n * 10**12)},
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def topology(name: str, url: str) -> Topology:
    return resolve({
        "version": 1, "name": name, "description": "bench",
        "broker": {"kind": "rabbitmq", "rabbitmq": {"url": url, "partitions": PARTITIONS}},
        "chains": {1: {"name": "ethereum"}},
        "events": {"transaction.confirmed": {"description": "bench", "producers": ["bench"], "key": "from_address",
                                             "payload": {"from_address": "string"}}},
        "consumer_groups": {"bench": {"subscribes": ["transaction.confirmed"]}},
    })


@contextmanager
def scratch_vhost(amqp_url: str, management_url: str) -> Iterator[str]:
    parsed = urllib.parse.urlsplit(management_url)
    auth = (urllib.parse.unquote(parsed.username or "guest"), urllib.parse.unquote(parsed.password or "guest"))
    base = urllib.parse.urlunsplit((parsed.scheme, f"{parsed.hostname}:{parsed.port or 15672}", "", "", ""))
    name = f"bench-{uuid.uuid4().hex[:8]}"
    amqp = urllib.parse.urlsplit(amqp_url)
    user = urllib.parse.unquote(amqp.username or "guest")
    requests.put(f"{base}/api/vhosts/{name}", auth=auth, json={}, timeout=10).raise_for_status()
    try:
        requests.put(f"{base}/api/permissions/{name}/{urllib.parse.quote(user, safe='')}", auth=auth,
                     json={"configure": ".*", "write": ".*", "read": ".*"}, timeout=10).raise_for_status()
        yield urllib.parse.urlunsplit((amqp.scheme, amqp.netloc, "/" + name, amqp.query, ""))
    finally:
        requests.delete(f"{base}/api/vhosts/{name}", auth=auth, timeout=30)


# --------------------------------------------------------------------------- publish


def raw_publish(url: str, exchange: str, routing_key: str, bodies: list[bytes], keys: list[str]) -> float:
    """Raw pika: one SelectConnection, confirms tracked by delivery tag, window of WINDOW."""
    total = len(bodies)
    state = {"sent": 0, "confirmed": 0}
    clock = {"start": 0.0, "end": 0.0}
    unconfirmed: OrderedDict[int, int] = OrderedDict()  # delivery tag -> message index
    channel_box: list[Any] = []

    def pump() -> None:
        channel = channel_box[0]
        # Same work per message as the transport: build properties, publish mandatory, track the tag.
        while state["sent"] < total and len(unconfirmed) < WINDOW:
            n = state["sent"]
            channel.basic_publish(exchange, routing_key, bodies[n],
                                  message_properties({"x-topo-key": keys[n]}), mandatory=True)
            state["sent"] += 1
            unconfirmed[state["sent"]] = n
            if state["sent"] % 500 == 0:
                connection.ioloop.call_later(0, pump)  # let the loop read confirms
                return

    def on_confirm(frame: Any) -> None:
        method = frame.method
        if method.multiple:
            while unconfirmed and next(iter(unconfirmed)) <= method.delivery_tag:
                unconfirmed.popitem(last=False)
                state["confirmed"] += 1
        elif unconfirmed.pop(method.delivery_tag, None) is not None:
            state["confirmed"] += 1
        if state["confirmed"] >= total:
            clock["end"] = time.perf_counter()
            connection.close()
        elif len(unconfirmed) < WINDOW // 2 and state["sent"] < total:
            pump()

    def on_channel(channel: Any) -> None:
        channel_box.append(channel)
        channel.add_on_return_callback(lambda *args: None)

        def selected(_frame: Any) -> None:
            clock["start"] = time.perf_counter()
            pump()

        channel.confirm_delivery(on_confirm, callback=selected)

    connection = pika.SelectConnection(pika.URLParameters(url), on_open_callback=lambda c: c.channel(
        on_open_callback=on_channel), on_close_callback=lambda c, r: c.ioloop.stop())
    connection.ioloop.start()
    return total / (clock["end"] - clock["start"])


def transport_publish(transport: RabbitMQTransport, topo: Topology, bodies: list[bytes], keys: list[str]) -> float:
    publisher = transport.open_publisher("bench")
    topic = topo.event_topic("transaction.confirmed", 1)
    errors: list[DeliveryReport] = []

    def report(r: DeliveryReport) -> None:
        if r.error is not None:
            errors.append(r)

    start = time.perf_counter()
    for body, key in zip(bodies, keys, strict=True):
        publisher.publish(topic, key, body, None, report)
    left = publisher.flush(120)
    elapsed = time.perf_counter() - start
    publisher.close()
    assert left == 0 and not errors, (left, errors[:3])
    return len(bodies) / elapsed


# --------------------------------------------------------------------------- consume


def raw_consume(url: str, queues: tuple[str, ...], total: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH_PER_QUEUE)
    count = 0
    start = time.perf_counter()

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal count
        json.loads(body)
        ch.basic_ack(method.delivery_tag)
        count += 1
        if count >= total:
            ch.stop_consuming()

    for queue in queues:
        channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - start
    connection.close()
    return total / elapsed


class _Quiet:
    def on_assigned(self, streams: Sequence[StreamId]) -> None: ...

    def on_revoked(self, streams: Sequence[StreamId]) -> None: ...

    def on_lost(self, streams: Sequence[StreamId]) -> None: ...


def transport_consume(transport: RabbitMQTransport, topo: Topology, total: int) -> float:
    group = topo.group("bench")
    consumer = transport.open_consumer(group, ConsumeOptions(max_in_flight=PREFETCH_PER_QUEUE * PARTITIONS))
    consumer.subscribe(_Quiet())
    count = 0
    start = time.perf_counter()
    while count < total:
        batch = consumer.poll(500, 0.1)
        for delivery in batch:
            json.loads(delivery.body)
        consumer.ack(batch)
        count += len(batch)
    elapsed = time.perf_counter() - start
    consumer.close()
    return total / elapsed


# --------------------------------------------------------------------------- latency


def transport_latency(transport: RabbitMQTransport, topo: Topology, rate: int, seconds: float) -> tuple[float, float]:
    group = topo.group("bench")
    consumer = transport.open_consumer(group, ConsumeOptions(max_in_flight=PREFETCH_PER_QUEUE * PARTITIONS))
    consumer.subscribe(_Quiet())
    consumer.poll(1, 0.1)
    total = int(rate * seconds)
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(latencies) < total:
            batch = consumer.poll(500, 0.1)
            now = time.time()
            latencies.extend(now - float(d.headers["x-bench-sent"]) for d in batch)
            consumer.ack(batch)
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    publisher = transport.open_publisher("bench-latency")
    topic = topo.event_topic("transaction.confirmed", 1)
    body = payload(1)
    start = time.perf_counter()
    for n in range(total):
        due = start + n / rate
        while (pause := due - time.perf_counter()) > 0:
            publisher.poll(pause)
        publisher.publish(topic, f"k{n % KEYS}", body, {"x-bench-sent": repr(time.time())})
    publisher.flush(30)
    done.wait(60)
    thread.join()
    publisher.close()
    consumer.close()
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


# --------------------------------------------------------------------------- main


def best(runs: int, first: Callable[[], float], second: Callable[[], float]) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return max(a), max(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    args = parser.parse_args()
    amqp = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    management = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    bodies = [payload(n) for n in range(args.events)]
    keys = [f"0x{n % KEYS:040x}" for n in range(args.events)]
    with scratch_vhost(amqp, management) as url:
        topo = topology(f"bench-{uuid.uuid4().hex[:6]}", url)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        declare(connection.channel(), topo)
        connection.close()
        transport = RabbitMQTransport(topo, max_unconfirmed=WINDOW)
        group = topo.group("bench")
        routing_key = topo.event_topic("transaction.confirmed", 1).routing_key
        pub_raw: list[float] = []
        pub_ours: list[float] = []
        con_raw: list[float] = []
        con_ours: list[float] = []
        for _ in range(args.rounds):
            # Each publish fills the queues; the consume that follows drains exactly what it put there.
            pub_raw.append(raw_publish(url, topo.rabbitmq.exchange, routing_key, bodies, keys))
            con_raw.append(raw_consume(url, group.rabbitmq.queues, args.events))
            pub_ours.append(transport_publish(transport, topo, bodies, keys))
            con_ours.append(transport_consume(transport, topo, args.events))
        p50, p99 = transport_latency(transport, topo, args.rate, args.latency_seconds)
        transport.close()
    size = len(bodies[0])
    print(f"RabbitMQ, {args.events} events of {size} bytes, {PARTITIONS} work queues, best of {args.rounds}")
    print(f"{'':10} {'raw pika':>12} {'transport':>12} {'ratio':>7}")
    print(f"{'publish':10} {max(pub_raw):10.0f}/s {max(pub_ours):10.0f}/s {max(pub_ours) / max(pub_raw):7.2f}")
    print(f"{'consume':10} {max(con_raw):10.0f}/s {max(con_ours):10.0f}/s {max(con_ours) / max(con_raw):7.2f}")
    print(f"latency through the transport at {args.rate}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
