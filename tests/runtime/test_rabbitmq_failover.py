"""RabbitMQ clients fail over across the nodes of a comma-separated URL.

Two TCP relays to the dev broker stand for two nodes of a cluster (the fault tests on the real
3-node cluster are tests/cluster/test_faults.py). The test closes the relay the publisher uses
while it publishes: every message gets exactly one report; none whose confirm was outstanding at
the cut is reported confirmed unless the broker confirmed it; the publisher goes on through the
other relay; and every message reported confirmed is in the queue.
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.cli.support import small_doc
from tests.runtime.topologies import compile_topology, provision_rabbitmq
from tests.support.relay import Relay
from tests.support.waiting import wait_until
from topo.runtime.transport.base import DeliveryReport
from topo.runtime.transport.rabbitmq import RabbitMQTransport
from topo.runtime.transport.rabbitmq.connection import node_parameters

pytestmark = pytest.mark.rabbitmq
BEFORE, AFTER = 300, 300  # messages published before and after the cut


@pytest.fixture
def relays(rabbit_vhost: Any) -> Iterator[tuple[Relay, Relay]]:
    parts = urllib.parse.urlsplit(rabbit_vhost.url)
    made = (Relay((parts.hostname or "127.0.0.1", parts.port or 5672)),
            Relay((parts.hostname or "127.0.0.1", parts.port or 5672)))
    for relay in made:
        relay.open()
    yield made
    for relay in made:
        relay.close()


def through(url: str, *relays: Relay) -> str:
    """`url` once per relay, comma-separated: a cluster's URL list."""
    parts = urllib.parse.urlsplit(url)
    return ",".join(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}").geturl()
                    for relay in relays)


def test_a_url_list_names_every_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    topology = compile_topology(small_doc(f"fo{uuid.uuid4().hex[:8]}", ("indexer",)), tmp_path)
    urls = "amqp://u:p@127.0.0.1:5682/%2F, amqp://u:p@127.0.0.1:5683/%2F,amqp://u:p@127.0.0.1:5684/%2F"
    nodes = node_parameters(topology.rabbitmq, "publisher", urls)
    assert [(node.host, node.port) for node in nodes.ordered()] == [("127.0.0.1", p) for p in (5682, 5683, 5684)]
    nodes.answered(nodes.all[1])
    assert [node.port for node in nodes.ordered()] == [5683, 5684, 5682]


def test_the_publisher_fails_over_and_never_reports_an_unconfirmed_message_confirmed(
        rabbit_vhost: Any, relays: tuple[Relay, Relay], tmp_path: Path) -> None:
    doc = small_doc(f"fo{uuid.uuid4().hex[:8]}", ("indexer",))
    doc["broker"]["kind"] = "rabbitmq"
    topology = compile_topology(doc, tmp_path)
    provision_rabbitmq(topology, rabbit_vhost.url)
    first, second = relays
    transport = RabbitMQTransport(topology, url=through(rabbit_vhost.url, first, second), publish_timeout=30)
    publisher = transport.open_publisher("failover-test")
    topic = topology.event("token.transfer").topics[0]
    reports: dict[int, list[DeliveryReport]] = {}
    lock = threading.Lock()

    def publish(number: int) -> None:
        def outcome(report: DeliveryReport) -> None:
            with lock:
                reports.setdefault(number, []).append(report)

        body = f'{{"n": {number}}}'.encode()
        publisher.publish(topic, f"key-{number % 4}", body, {}, outcome)

    try:
        for number in range(BEFORE):
            publish(number)
            if number == BEFORE // 2:
                first.close()  # the node the publisher uses goes away mid-stream
        for number in range(BEFORE, BEFORE + AFTER):
            publish(number)
        assert publisher.flush(60) == 0
    finally:
        transport.close()

    assert sorted(reports) == list(range(BEFORE + AFTER))
    assert all(len(got) == 1 for got in reports.values()), {n: got for n, got in reports.items() if len(got) != 1}
    confirmed = {n for n, (report,) in reports.items() if report.error is None}
    failed = {n: report.error for n, (report,) in reports.items() if report.error is not None}
    assert all("not confirmed" in str(error) or "not sent" in str(error) for error in failed.values()), failed
    assert getattr(publisher, "reconnects", 0) >= 1
    assert set(range(BEFORE + AFTER - 50, BEFORE + AFTER)) <= confirmed, "publishing did not go on after the cut"

    # Every confirmed message is stored: count what the group's queues hold (nothing consumes them).
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_vhost.url))
    try:
        channel = connection.channel()
        queues = topology.group("indexer").rabbitmq.queues

        def stored() -> int:
            return sum(channel.queue_declare(queue, passive=True).method.message_count for queue in queues)

        wait_until(lambda: stored() >= len(confirmed), 30, lambda: f"{len(confirmed)} confirmed messages stored; "
                   f"the queues hold {stored()}")
        assert stored() <= BEFORE + AFTER
    finally:
        connection.close()
    print(f"failover: {len(confirmed)} confirmed, {len(failed)} reported failed, "
          f"{getattr(publisher, 'reconnects', 0)} reconnect(s)")
