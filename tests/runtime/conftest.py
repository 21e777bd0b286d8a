"""The conformance suite's fixtures: one `bus` per test, on each transport in TRANSPORTS.

Adding a broker is one entry in TRANSPORTS plus how its plumbing is created, from the project's
own desired state (topologies.py: Kafka through `topo apply`'s engine, RabbitMQ through the
declarations `topo apply` creates too). A failure there fails the test: it is never a skip.
Subprocess tests (`topo run` processes) skip the in-memory transport: it lives in one process.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from topologies import Bus, compile_topology, delete_kafka, document, drop_tables, provision_kafka, provision_rabbitmq

TRANSPORTS = ("memory", "kafka", "rabbitmq")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=TRANSPORTS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_bus(transport_kind: str, request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Bus]]:
    """Factory: `make_bus(**document_options, groups=None, events=None)` -> a compiled, provisioned topology
    with a unique name (every topic, queue and group name starts with it)."""
    cleanups: list[Callable[[], None]] = []
    made: list[Bus] = []

    def build(groups: dict[str, Any] | None = None, events: dict[str, Any] | None = None, **options: Any) -> Bus:
        name = f"rt{uuid.uuid4().hex[:8]}"
        doc = document(name, **options)
        doc["naming"] = {"topic": "{topology}.{event_type}.{chain_id}"}
        for group, settings in (groups or {}).items():
            doc["consumer_groups"].setdefault(group, {}).update(settings)
        for event, settings in (events or {}).items():
            doc["events"][event].update(settings)
        out = tmp_path / name
        topology = compile_topology(doc, out)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
        if transport_kind == "kafka":
            bootstrap = request.getfixturevalue("kafka_bootstrap")
            monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            names = provision_kafka(topology, bootstrap)
            cleanups.append(lambda: delete_kafka(names, bootstrap))
        elif transport_kind == "rabbitmq":
            vhost = request.getfixturevalue("rabbit_vhost")
            monkeypatch.setenv("RABBITMQ_URL", vhost.url)
            env["RABBITMQ_URL"] = vhost.url
            provision_rabbitmq(topology, vhost.url)
        bus = Bus(transport_kind, topology, out, env)
        made.append(bus)
        return bus

    yield build
    for bus in made:
        for runtime in bus.runtimes:
            runtime.close()
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def needs_processes(transport_kind: str) -> None:
    if transport_kind == "memory":
        pytest.skip("not applicable: the in-memory transport lives in one process, `topo run` is another")


STORES = ("memory", "sqlite", "postgres")


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dedup(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A group's `dedup` settings for `store_kind`: the PostgreSQL store gets a table of its own."""
    if store_kind == "memory":
        yield {"store": "memory"}
    elif store_kind == "sqlite":
        yield {"store": "sqlite", "path": str(tmp_path / "dedup.sqlite")}
    else:
        url = request.getfixturevalue("postgres_url")
        table = f"processed_{uuid.uuid4().hex[:10]}"
        yield {"store": "postgres", "dsn": url, "table": table}
        drop_tables(url, table, f"effects_{table}")

