"""RabbitMQ: topo versus raw pika, in one run on the same broker, same payload bytes and settings.

    python bench/runtime_rabbitmq.py [--events 20000] [--rounds 2] [--rate 1000] [--seconds 5]

Runs in a throwaway vhost (created and deleted through the management API); the plumbing is
declared from the model (`topo.runtime.transport.rabbitmq.provision`). Both sides publish
persistent messages with `mandatory`, the `x-topo-key` header and publisher confirms tracked
asynchronously (the raw side: one pika `SelectConnection`, confirms matched by delivery tag, the
same window of unconfirmed messages); both consume the group's work queues with manual acks
(the raw loop: one `multiple` ack per 50 messages; topo: a `multiple` ack per settled batch),
the same prefetch, and `json.loads` of every body.

1. Runtime (the numbers the issue's targets apply to), the same work as bench/runtime.py does
   on Kafka: raw publishing of an envelope built with uuid4 + timestamp + `json.dumps` versus
   `Publisher.publish` of a generated payload instance; a raw consume loop versus a `topo`
   consumer group with a no-op handler (validation, dedup, per-key dispatch, acks); end-to-end
   latency at `--rate` events/s, now minus the envelope timestamp when the handler sees it.
2. Transport alone: the same pre-built bodies through raw pika and through
   `RabbitMQPublisher` / `RabbitMQConsumer` (what the transport itself costs).

The best of `--rounds` runs of each side is kept for the transport-level figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pika
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script by `python -m bench`

from bench.runtime import (
    Row,
    RuntimeBench,
    compile_into,
    paced,
    payload_dict,
    percentile,
    print_table,
    raw_envelope,
)
from topo.core.model import Topology
from topo.generator.resolve import resolve
from topo.runtime.process import tune_garbage_collector
from topo.runtime.transport.base import ConsumeOptions, DeliveryReport, StreamId
from topo.runtime.transport.rabbitmq import RabbitMQTransport, message_properties, provision

WINDOW = 10_000  # unconfirmed messages in flight, both sides
PARTITIONS = 3
KEYS = 500
LATENCY_MARK = 10**9
RAW_ACK_EVERY = 50  # log_index of the events a latency run measures

MakeMessage = Callable[[int], tuple[bytes, str]]  # index -> (body, key)


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


# --------------------------------------------------------------------------- raw pika


def raw_publish(url: str, exchange: str, routing_key: str, count: int, make: MakeMessage,
                rate: int | None = None) -> float:
    """One SelectConnection, confirms tracked by delivery tag within WINDOW; paced when `rate`."""
    state = {"sent": 0, "confirmed": 0}
    clock = {"start": 0.0, "end": 0.0}
    unconfirmed: OrderedDict[int, int] = OrderedDict()  # delivery tag -> message index
    channel_box: list[Any] = []

    def pump() -> None:
        channel = channel_box[0]
        while state["sent"] < count and len(unconfirmed) < WINDOW:
            n = state["sent"]
            if rate is not None:
                due = clock["start"] + n / rate
                if due > time.perf_counter():
                    connection.ioloop.call_later(max(0.0, due - time.perf_counter()), pump)
                    return
            body, key = make(n)
            # The same work per message as the transport: properties, mandatory publish, tracking.
            channel.basic_publish(exchange, routing_key, body, message_properties({"x-topo-key": key}),
                                  mandatory=True)
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
        if state["confirmed"] >= count:
            clock["end"] = time.perf_counter()
            connection.close()
        elif rate is None and len(unconfirmed) < WINDOW // 2 and state["sent"] < count:
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
    return count / (clock["end"] - clock["start"])


def raw_consume(url: str, queues: Sequence[str], count: int, prefetch: int,
                on_body: Callable[[Any], None] | None = None, started: threading.Event | None = None) -> float:
    """Manual acks, `json.loads` of each body; the clock starts at the first message."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    seen = [0]
    first: list[float] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        if not first:
            first.append(time.perf_counter())
        document = json.loads(body)
        if on_body is not None:
            on_body(document)
        seen[0] += 1
        # Messages are handled in arrival order on one channel, so one `multiple` ack per
        # RAW_ACK_EVERY covers them all: the cheapest correct raw loop (per-message acks cost ~2x).
        if seen[0] % RAW_ACK_EVERY == 0 or seen[0] >= count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if seen[0] >= count:
            ch.stop_consuming()

    for queue in queues:
        channel.basic_consume(queue, on_message)
    if started is not None:
        started.set()
    channel.start_consuming()
    elapsed = time.perf_counter() - first[0]
    connection.close()
    return count / elapsed


# --------------------------------------------------------------------------- the runtime


class RuntimeSide(RuntimeBench):
    """The runtime on RabbitMQ: the Kafka bench's side, with its own wait before the latency run."""

    def __init__(self, folder: Path, concurrency: int | None) -> None:
        super().__init__(folder, concurrency, broker="rabbitmq")

    def latency(self, rate: int, seconds: float) -> list[float]:
        samples: list[float] = []
        total = int(rate * seconds)

        def handle(event: Any) -> None:
            if event.payload.log_index >= LATENCY_MARK:
                samples.append(time.time() - event.timestamp.timestamp())

        join = self._run(handle, lambda: len(samples) >= total, seconds + 90)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self.runner is None or len(self.runner.generations) < PARTITIONS):
            time.sleep(0.05)
        def send(index: int) -> None:
            self.publisher.publish(self.module.TokenTransfer(**payload_dict(LATENCY_MARK + index)))

        paced(rate, total, send)
        self.publisher.flush(30)
        join(seconds + 60)
        return samples


def bench_runtime(url: str, events: int, rate: int, seconds: float, concurrency: int | None) -> list[Row]:
    os.environ["RABBITMQ_URL"] = url  # the generated topology reads ${RABBITMQ_URL}
    tag = uuid.uuid4().hex[:6]
    with TemporaryDirectory() as temp:
        raw_topology = compile_into(f"bench-raw-{tag}", Path(temp) / "raw")
        ours_topology = compile_into(f"bench-topo-{tag}", Path(temp) / "topo")
        provision(raw_topology)
        provision(ours_topology)
        group = raw_topology.group("bench")
        prefetch = max(1, group.max_in_flight // len(group.rabbitmq.queues))  # what the transport uses
        exchange = raw_topology.rabbitmq.exchange
        routing_key = raw_topology.events[0].topics[0].routing_key

        def envelope(index: int) -> tuple[bytes, str]:
            payload = payload_dict(index)
            return raw_envelope(payload, time.time()), str(payload["token_address"])

        ours = RuntimeSide(Path(temp) / "topo", concurrency)
        raw_publish(url, exchange, routing_key, 200, envelope)  # warm-up on both sides
        ours.publish(200)
        raw_pub = raw_publish(url, exchange, routing_key, events, envelope)
        ours_pub = ours.publish(events)
        raw_con = raw_consume(url, group.rabbitmq.queues, events + 200, prefetch)
        ours_con = ours.consume(events + 200)

        raw_lat: list[float] = []

        def measure(document: Any) -> None:
            if document["payload"]["log_index"] >= LATENCY_MARK:
                stamp = time.strptime(document["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
                fraction = float("0." + document["timestamp"][20:-1] or "0")
                raw_lat.append(time.time() - (time.mktime(stamp) - time.timezone + fraction))

        total = int(rate * seconds)
        ready = threading.Event()
        reader = threading.Thread(target=raw_consume, args=(url, group.rabbitmq.queues, total, prefetch),
                                  kwargs={"on_body": measure, "started": ready}, daemon=True)
        reader.start()
        ready.wait(30)
        raw_publish(url, exchange, routing_key, total, lambda i: envelope(LATENCY_MARK + i), rate=rate)
        reader.join(seconds + 30)
        ours_lat = ours.latency(rate, seconds)
        ours.runtime.close()
    rows: list[Row] = [
        ("rabbitmq publish (events/s)", f"{raw_pub:,.0f}", f"{ours_pub:,.0f}", f"{ours_pub / raw_pub:.2f}x",
         ">= 0.9x"),
        ("rabbitmq consume (events/s)", f"{raw_con:,.0f}", f"{ours_con:,.0f}", f"{ours_con / raw_con:.2f}x",
         ">= 0.8x"),
    ]
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        raw_value, ours_value = percentile(raw_lat, fraction) * 1000, percentile(ours_lat, fraction) * 1000
        rows.append((f"rabbitmq latency {label} at {rate}/s (ms)", f"{raw_value:.1f}", f"{ours_value:.1f}",
                     f"{ours_value / raw_value:.2f}x", "< 50 ms" if label == "p99" else "<= 1.3x"))
    rows.append(("rabbitmq latency samples", str(len(raw_lat)), str(len(ours_lat)), "", ""))
    return rows


# --------------------------------------------------------------------------- the transport alone


def bench_payload(n: int) -> bytes:
    """A ~380-byte envelope, built once for both sides."""
    return raw_envelope(payload_dict(n), 1_700_000_000.0)


def transport_topology(name: str, url: str) -> Topology:
    return resolve({
        "version": 1, "name": name, "description": "bench",
        "broker": {"kind": "rabbitmq", "rabbitmq": {"url": url, "partitions": PARTITIONS}},
        "chains": {1: {"name": "ethereum"}},
        "events": {"transaction.confirmed": {"description": "bench", "producers": ["bench"], "key": "from_address",
                                             "payload": {"from_address": "string"}}},
        "consumer_groups": {"bench": {"subscribes": ["transaction.confirmed"], "max_in_flight": 768}},
    })


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


class _Quiet:
    def on_assigned(self, streams: Sequence[StreamId]) -> None: ...

    def on_revoked(self, streams: Sequence[StreamId]) -> None: ...

    def on_lost(self, streams: Sequence[StreamId]) -> None: ...


def transport_consume(transport: RabbitMQTransport, topo: Topology, total: int) -> float:
    group = topo.group("bench")
    consumer = transport.open_consumer(group, ConsumeOptions(max_in_flight=group.max_in_flight))
    consumer.subscribe(_Quiet())
    count = 0
    start = 0.0
    while count < total:
        batch = consumer.poll(500, 0.1)
        if batch and not start:
            start = time.perf_counter()
        for delivery in batch:
            json.loads(delivery.body)
        consumer.ack(batch)
        count += len(batch)
    elapsed = time.perf_counter() - start
    consumer.close()
    return total / elapsed


def bench_transport(url: str, events: int, rounds: int) -> list[Row]:
    topo = transport_topology(f"bench-t-{uuid.uuid4().hex[:6]}", url)
    provision(topo, url)
    transport = RabbitMQTransport(topo, max_unconfirmed=WINDOW)
    group = topo.group("bench")
    prefetch = group.max_in_flight // len(group.rabbitmq.queues)
    routing_key = topo.event_topic("transaction.confirmed", 1).routing_key
    bodies = [bench_payload(n) for n in range(events)]
    keys = [f"0x{n % KEYS:040x}" for n in range(events)]
    pub_raw: list[float] = []
    pub_ours: list[float] = []
    con_raw: list[float] = []
    con_ours: list[float] = []
    for _ in range(rounds):
        # Each publish fills the queues; the consume that follows drains exactly what it put there.
        pub_raw.append(raw_publish(url, topo.rabbitmq.exchange, routing_key, events,
                                   lambda i: (bodies[i], keys[i])))
        con_raw.append(raw_consume(url, group.rabbitmq.queues, events, prefetch))
        pub_ours.append(transport_publish(transport, topo, bodies, keys))
        con_ours.append(transport_consume(transport, topo, events))
    transport.close()
    best = max(pub_raw), max(pub_ours), max(con_raw), max(con_ours)
    return [
        (f"transport publish, {len(bodies[0])} B (events/s)", f"{best[0]:,.0f}", f"{best[1]:,.0f}",
         f"{best[1] / best[0]:.2f}x", ""),
        ("transport consume (events/s)", f"{best[2]:,.0f}", f"{best[3]:,.0f}", f"{best[3] / best[2]:.2f}x", ""),
    ]


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="transport-level runs per side (best kept)")
    parser.add_argument("--rate", type=int, default=1000, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="fixed runtime worker threads (0: inline); default: topo run's adaptive default")
    options = parser.parse_args(argv)
    tune_garbage_collector()  # what `topo run` does; one process, so the raw side runs with it too
    amqp = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    management = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    rows: list[Row] = [("measure", "raw pika", "topo", "ratio", "target")]
    with scratch_vhost(amqp, management) as url:
        rows += bench_runtime(url, options.events, options.rate, options.seconds, options.concurrency)
        rows += bench_transport(url, options.events, options.rounds)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
