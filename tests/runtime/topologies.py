"""Test topologies and provisioning for the runtime conformance suite (no pytest imports here:
subprocess consumers import it too)."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topo.core.desired import kafka_topics
from topo.core.model import Topology
from topo.generator.emit import emit_all
from topo.generator.resolve import resolve
from topo.runtime.app import Runtime

HANDLERS_DIR = Path(__file__).resolve().parent


def document(name: str, retry_initial: str = "1s", partitions: int = 3, envelope: str = "topo") -> dict[str, Any]:
    """Two chains, an ordered event keyed by sender, an unordered one (written with `envelope`), and
    three groups."""
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": "kafka", "kafka": {"partitions": partitions, "replication_factor": 1},
                   "rabbitmq": {"exchange": f"{name}.events", "partitions": partitions}},
        "chains": {1: {"name": "ethereum"}, 138: {"name": "meta"}},
        "defaults": {"retry": {"max_retries": 3, "backoff": "exponential", "initial": retry_initial,
                               "multiplier": 2, "max": "1m"}},
        "events": {
            "tx.seen": {"producers": ["indexer"], "key": "sender", "ordered": True,
                        "payload": {"sender": "string", "seq": {"type": "integer", "minimum": 0},
                                    "note": {"type": "string", "required": False}}},
            "token.moved": {"producers": ["indexer"], "key": "token", "ordered": False, "envelope": envelope,
                            "payload": {"token": "string", "seq": {"type": "integer", "minimum": 0},
                                        "note": {"type": "string", "required": False}}},
        },
        "consumer_groups": {
            "alpha": {"subscribes": ["tx.seen", "token.moved"], "max_in_flight": 64},
            "beta": {"subscribes": ["tx.seen"]},
            "gamma": {"subscribes": ["token.moved"]},
        },
    }


def compile_topology(doc: dict[str, Any], out: Path) -> Topology:
    topology = resolve(doc)
    for relative, text in emit_all(topology).items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if str(HANDLERS_DIR) not in sys.path:
        sys.path.insert(0, str(HANDLERS_DIR))
    return topology


def provision_kafka(topology: Topology, bootstrap: str) -> list[str]:
    """Create the topology's topics as `topo apply` does (its plan and apply engine, so the
    suite runs on the layout users get: retry and DLQ topics sized from their events); returns
    every topic name the topology owns (for deletion)."""
    from topo.provision.engine import Provisioner
    from topo.provision.plan import Broker

    provisioner = Provisioner(topology, (Broker.KAFKA,), env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    plan = provisioner.plan()
    assert not plan.impossible, f"topology {topology.name}: the plan has impossible changes"
    provisioner.apply(plan, report=lambda line: None)
    return sorted(spec.name for spec in kafka_topics(topology))


def provision_rabbitmq(topology: Topology, url: str) -> None:
    """Declare the topology's exchanges, queues and bindings from the desired state (the objects
    `topo apply` creates; AMQP, so no management plugin is needed)."""
    from topo.runtime.transport.rabbitmq import provision

    provision(topology, url)


def delete_kafka(names: list[str], bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone: fine for teardown
            future.result(timeout=60)


@dataclass
class Bus:
    kind: str
    topology: Topology
    generated: Path
    env: dict[str, str]  # environment for `topo run` subprocesses
    runtimes: list[Runtime] = field(default_factory=list)
    shared: Any = None  # memory: the one transport every runtime of the test shares

    def runtime(self, **options: Any) -> Runtime:
        if self.kind == "memory":
            from topo.runtime.events import EventClasses
            from topo.runtime.transport.memory import MemoryTransport

            if self.shared is None:
                self.shared = MemoryTransport(self.topology)
            made = Runtime(self.topology, EventClasses.load(self.topology, self.generated), self.shared, **options)
        else:
            made = Runtime.from_generated(self.generated, broker=self.kind, **options)
        self.runtimes.append(made)
        return made

    @property
    def topology_file(self) -> Path:
        return self.generated / "topology.json"


def drop_tables(url: str, *tables: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as connection:
        for table in tables:
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
