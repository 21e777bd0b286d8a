"""topo versus FastStream versus the raw clients: same broker, same topic or queues, same payload bytes, one run.

    python bench/peers.py [--events 10000] [--confirmed 1500] [--rounds 3] [--only kafka|rabbitmq]

Needs the `bench` extra (`pip install -e '.[bench]'`: FastStream with its aiokafka, confluent and
RabbitMQ backends). Every side publishes the same envelope bytes (built once with uuid4 +
timestamp + `json.dumps`; topo builds its own from the same payload) to the same topic (Kafka)
or exchange (RabbitMQ) of one throwaway topology that `topo` provisioned, and consumes the same
log or work queues. FastStream's handlers take the generated envelope class
(`TokenTransferEvent`) as their argument, so they validate what topo validates. Rounds alternate
the sides (raw, topo, FastStream...), so noise from other processes hits all of them alike; the
table gives each side's best round and, as ratios, topo's best against the peer's best and the
median of the per-round ratios.

* publish: raw `Producer.produce` + `flush` (Kafka) / pika with asynchronous confirms
  (RabbitMQ); topo's `Publisher.publish` + `flush`; FastStream's `broker.publish` awaiting each
  confirm (`--confirmed` events: it is slow) and, on Kafka, with `no_confirm=True`, gathering the
  futures at the end;
* consume: raw consume loops with `json.loads`; topo's consumer group in `topo run`'s default
  mode with a no-op handler; FastStream subscribers (Kafka: a group per backend, from the earliest
  offset; RabbitMQ: the topology's quorum work queues, acked after the handler).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script by `python -m bench`

from bench.runtime import RawKafka, Row, RuntimeBench, compile_into, payload_dict, print_table, raw_envelope, topics_of
from bench.runtime_rabbitmq import raw_consume, raw_publish, scratch_vhost
from topo.core.interpolate import expand
from topo.runtime.process import tune_garbage_collector
from topo.runtime.transport.rabbitmq import provision

# FastStream logs every message at INFO; its warnings (e.g. a handler failing validation) stay visible.
PEER_LOGGER = logging.getLogger("bench.peers.faststream")
PEER_LOGGER.setLevel(logging.WARNING)
Messages = list[tuple[bytes, str]]  # (envelope bytes, key)
STALL = 30.0  # seconds without an event after which a peer's consume run ends (aiokafka sometimes stalls)
SESSION_TIMEOUT_MS = 30_000  # the loaded machine: 10 s (the default) expired aiokafka sessions mid-run


def messages(count: int, offset: int = 0) -> Messages:
    made = []
    for index in range(offset, offset + count):
        payload = payload_dict(index)
        made.append((raw_envelope(payload, time.time()), str(payload["token_address"])))
    return made


class Counter:
    """Counts handled events; the clock runs from the first to the `target`-th."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0
        self.first = self.last = self.final = 0.0
        self.done = asyncio.Event()

    def hit(self) -> None:
        if not self.seen:
            self.first = time.perf_counter()
        self.seen += 1
        self.final = time.perf_counter()
        if self.seen == self.target:
            self.last = self.final
            self.done.set()

    def rate(self) -> float:
        """Events per second from the first to the last one counted (all of them, or those
        before a stall: generous to a consumer that stalled)."""
        if not self.last:
            self.last = self.final
        return (self.seen - 1) / (self.last - self.first) if self.seen > 1 else 0.0

    async def wait(self, name: str) -> None:
        """Until `target` were counted, or no event came for STALL seconds (reported)."""
        while not self.done.is_set():
            before = self.seen
            try:
                await asyncio.wait_for(self.done.wait(), STALL)
            except TimeoutError:
                if self.seen == before:
                    print(f"{name}: stalled after {self.seen} of {self.target} events; its rate covers those",
                          file=sys.stderr, flush=True)
                    return


# --------------------------------------------------------------------------- FastStream


def typed_handler(envelope: type, counter: Counter) -> Callable[[Any], Awaitable[None]]:
    """A no-op FastStream handler whose argument is the generated envelope class: FastStream
    validates each body into it, as topo does."""

    async def handle(event: Any) -> None:
        counter.hit()

    handle.__annotations__["event"] = envelope  # a real class, not a string: FastStream reads it
    return handle


async def timed_publish(count: int, send: Callable[[bytes, str], Awaitable[Any]], gather: bool) -> float:
    """`send` each message; with `gather`, await the futures it returned at the end."""
    batch = messages(count)
    started = time.perf_counter()
    pending = [await send(body, key) for body, key in batch]
    if gather:
        await asyncio.gather(*pending)
    return count / (time.perf_counter() - started)


def faststream_kafka(backend: str, bootstrap: str) -> Any:
    if backend == "aiokafka":
        from faststream.kafka import KafkaBroker

        return KafkaBroker(bootstrap, logger=PEER_LOGGER)
    from faststream.confluent import KafkaBroker as ConfluentBroker

    return ConfluentBroker(bootstrap, logger=PEER_LOGGER)


async def fs_kafka_publish(backend: str, bootstrap: str, topic: str, count: int, confirm: bool) -> float:
    broker = faststream_kafka(backend, bootstrap)
    await broker.start()
    try:
        async def send(body: bytes, key: str) -> Any:
            return await broker.publish(body, topic, key=key.encode(), no_confirm=not confirm)

        return await timed_publish(count, send, gather=not confirm)
    finally:
        await broker.stop()


async def fs_kafka_consume(backend: str, bootstrap: str, topic: str, group: str, envelope: type, count: int
                           ) -> float:
    broker = faststream_kafka(backend, bootstrap)
    counter = Counter(count)

    broker.subscriber(topic, group_id=group, auto_offset_reset="earliest",
                      session_timeout_ms=SESSION_TIMEOUT_MS)(typed_handler(envelope, counter))
    await broker.start()
    try:
        await counter.wait(f"FastStream {backend} consume")
    finally:
        await broker.stop()
    return counter.rate()


async def fs_rabbit_publish(url: str, exchange: str, routing_key: str, key_header: str, count: int) -> float:
    from faststream.rabbit import RabbitBroker, RabbitExchange
    from faststream.rabbit.schemas import ExchangeType

    broker = RabbitBroker(url, logger=PEER_LOGGER)
    target = RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True, declare=False)
    await broker.start()
    try:
        async def send(body: bytes, key: str) -> Any:
            return await broker.publish(body, exchange=target, routing_key=routing_key, headers={key_header: key},
                                        persist=True, content_type="application/json")

        return await timed_publish(count, send, gather=False)
    finally:
        await broker.stop()


async def fs_rabbit_consume(url: str, queues: list[str], envelope: type, count: int, prefetch: int) -> float:
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue

    broker = RabbitBroker(url, logger=PEER_LOGGER)
    counter = Counter(count)
    for name in queues:
        queue = RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True, declare=False)

        broker.subscriber(queue, channel=Channel(prefetch_count=prefetch))(typed_handler(envelope, counter))
    await broker.start()
    try:
        await counter.wait("FastStream RabbitMQ consume")
    finally:
        await broker.stop()
    return counter.rate()


# --------------------------------------------------------------------------- the table


def rows_against(label: str, topo: list[float], peers: dict[str, list[float]], target: dict[str, str]) -> list[Row]:
    """One row per side (best round), and topo's ratio over each peer: best/best, median of pairs."""
    rows: list[Row] = [(label, "topo", f"{max(topo):,.0f}", "", "")]
    for name, rates in peers.items():
        paired = statistics.median(t / p for t, p in zip(topo, rates, strict=True))
        rows.append(("", name, f"{max(rates):,.0f}", f"{max(topo) / max(rates):.1f}x / {paired:.1f}x",
                     target.get(name, "")))
    return rows


def bench_kafka(events: int, confirmed: int, rounds: int) -> list[Row]:
    bootstrap = expand("${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tag = uuid.uuid4().hex[:6]
    with TemporaryDirectory() as temp:
        topology = compile_into(f"bench-peers-{tag}", Path(temp))
        created = topics_of(topology)
        for future in admin.create_topics(created, operation_timeout=30).values():
            future.result(60)
        try:
            raw = RawKafka(topology, bootstrap)
            ours = RuntimeBench(Path(temp), None)
            envelope = ours.module.TokenTransferEvent
            topic = raw.topic
            raw.publish(200)
            ours.publish(200)
            publish: dict[str, list[float]] = {name: [] for name in (
                "raw confluent-kafka", "FastStream aiokafka, no confirm", "FastStream confluent, no confirm",
                "FastStream aiokafka, awaiting confirms", "FastStream confluent, awaiting confirms")}
            topo_publish: list[float] = []
            consume: dict[str, list[float]] = {"raw confluent-kafka": [], "FastStream aiokafka": [],
                                               "FastStream confluent": []}
            topo_consume: list[float] = []
            for round_index in range(rounds):
                publish["raw confluent-kafka"].append(raw.publish(events))
                topo_publish.append(ours.publish(events))
                for backend in ("aiokafka", "confluent"):
                    publish[f"FastStream {backend}, no confirm"].append(
                        asyncio.run(fs_kafka_publish(backend, bootstrap, topic, events, confirm=False)))
                    publish[f"FastStream {backend}, awaiting confirms"].append(
                        asyncio.run(fs_kafka_publish(backend, bootstrap, topic, confirmed, confirm=True)))
                per_round = events * 9 // 10
                topo_consume.append(ours.consume(per_round))
                consume["raw confluent-kafka"].append(raw.consume(per_round))
                for backend in ("aiokafka", "confluent"):
                    consume[f"FastStream {backend}"].append(asyncio.run(fs_kafka_consume(
                        backend, bootstrap, topic, f"fs-{backend}-{tag}", envelope, per_round)))
                print(f"kafka round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
            ours.runtime.close()
        finally:
            for future in admin.delete_topics([t.topic for t in created], operation_timeout=30).values():
                future.result(60)
    rows = rows_against("kafka publish (events/s)", topo_publish, publish, {
        "FastStream aiokafka, no confirm": ">= 2.5x", "FastStream confluent, no confirm": ">= 2.5x",
        "FastStream aiokafka, awaiting confirms": ">= 10x", "FastStream confluent, awaiting confirms": ">= 10x"})
    rows += rows_against("kafka consume (events/s)", topo_consume, consume, {
        "FastStream aiokafka": ">= 5x", "FastStream confluent": ">= 5x"})
    return rows


def bench_rabbitmq(url: str, events: int, confirmed: int, rounds: int) -> list[Row]:
    os.environ["RABBITMQ_URL"] = url  # the generated topology reads ${RABBITMQ_URL}
    tag = uuid.uuid4().hex[:6]
    with TemporaryDirectory() as temp:
        topology = compile_into(f"bench-peers-{tag}", Path(temp))
        provision(topology)
        group = topology.group("bench")
        queues = list(group.rabbitmq.queues)
        prefetch = max(1, group.max_in_flight // len(queues))
        exchange = topology.rabbitmq.exchange
        routing_key = topology.events[0].topics[0].routing_key
        key_header = topology.rabbitmq.key_header
        ours = RuntimeBench(Path(temp), None, broker="rabbitmq")
        envelope = ours.module.TokenTransferEvent
        made = messages(events)

        def raw_send(count: int) -> float:
            return raw_publish(url, exchange, routing_key, count, lambda i: made[i % len(made)])

        raw_send(200)
        ours.publish(200)
        raw_consume(url, queues, 400, prefetch)
        topo_publish: list[float] = []
        publish: dict[str, list[float]] = {"raw pika": [], "FastStream, awaiting confirms": []}
        topo_consume: list[float] = []
        consume: dict[str, list[float]] = {"raw pika": [], "FastStream": []}
        for round_index in range(rounds):
            publish["raw pika"].append(raw_send(events))
            topo_publish.append(ours.publish(events))
            publish["FastStream, awaiting confirms"].append(asyncio.run(
                fs_rabbit_publish(url, exchange, routing_key, key_header, confirmed)))
            # The queues now hold this round's events: each consumer takes a quarter in turn (a
            # consumer may take a prefetch's worth past its count while it stops: the slack).
            share = (2 * events + confirmed) // 4
            consume["raw pika"].append(raw_consume(url, queues, share, prefetch))
            consume["FastStream"].append(asyncio.run(fs_rabbit_consume(url, queues, envelope, share, prefetch)))
            topo_consume.append(ours.consume(share))
            print(f"rabbitmq round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
        ours.runtime.close()
    rows = rows_against("rabbitmq publish (events/s)", topo_publish, publish,
                        {"FastStream, awaiting confirms": ">= 5x"})
    rows += rows_against("rabbitmq consume (events/s)", topo_consume, consume, {"FastStream": ">= 5x"})
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per round and side")
    parser.add_argument("--confirmed", type=int, default=1_500,
                        help="events per round of FastStream's publish awaiting each confirm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("kafka", "rabbitmq"), default=None)
    options = parser.parse_args(argv)
    try:
        import faststream  # noqa: F401
    except ImportError:
        print("bench/peers.py needs the bench extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    tune_garbage_collector()  # what `topo run` does; one process, so every side runs with it
    rows: list[Row] = [("measure", "side", "best round", "topo: best / median of pairs", "target")]
    if options.only in (None, "kafka"):
        rows += bench_kafka(options.events, options.confirmed, options.rounds)
    if options.only in (None, "rabbitmq"):
        amqp = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
        management = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
        with scratch_vhost(amqp, management) as url:
            rows += bench_rabbitmq(url, options.events, options.confirmed, options.rounds)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
