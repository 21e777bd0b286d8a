"""Real brokers for development and tests: Apache Kafka (KRaft), RabbitMQ, Prometheus and PostgreSQL.

Usage (from the repository root; standard library only, so any python3 >= 3.11 runs it)::

    python3 -m dev.brokers up     [kafka] [rabbitmq] [prometheus] [postgres]
    python3 -m dev.brokers down   [kafka] [rabbitmq] [prometheus] [postgres]
    python3 -m dev.brokers status [kafka] [rabbitmq] [prometheus] [postgres]
    python3 -m dev.brokers cluster up|down|status [--json]|env|kill|start|pause|resume [NODE]

* Kafka: jars resolved from Maven Central by ``dev/kafka/pom.xml`` into a cache
  (``$TOPO_CACHE_DIR`` or ``~/.cache/topo``), one combined broker + controller on 127.0.0.1,
  data and logs under ``$TOPO_RUN_DIR/kafka`` (default ``<repo>/.run``); data survive ``down``/``up``.
* RabbitMQ: Debian's ``rabbitmq-server`` (installed with apt-get when missing) with the
  consistent-hash exchange, management and prometheus plugins; a node that already runs is reused.
* Prometheus: Debian's ``prometheus`` package (``promtool``); ``up`` only installs it.  Tests start
  servers on free ports with :func:`start_prometheus_server`.
* PostgreSQL (the processed store of ``dedup: {store: postgres}``): Debian's ``postgresql`` (installed
  with apt-get when ``/usr/lib/postgresql/*/bin/initdb`` is missing), a cluster under
  ``$TOPO_RUN_DIR/postgres`` on 127.0.0.1:5432, database and user ``topo`` (``dev/brokerkit/postgres.py``).

* TLS (tests only): ``dev/brokerkit/tls.py`` makes a private CA and a certificate for 127.0.0.1 with
  ``openssl``; ``dev/brokerkit/tls_nodes.py`` starts a Kafka node with an SSL listener and a RabbitMQ
  node with amqps and https management on ports and folders of their own (tests/brokers/test_tls.py).

* Cluster (``dev/brokerkit/cluster.py``): three KRaft Kafka nodes and three clustered RabbitMQ nodes
  on ports of their own, state under ``$TOPO_RUN_DIR/cluster``, for fault tests.

``down`` stops only the processes that ``up`` started, by the pids it recorded.  Setting
``KAFKA_BOOTSTRAP_SERVERS``, ``RABBITMQ_URL`` or ``DATABASE_URL`` points everything at external brokers: ``up`` then
only checks that they answer and starts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python3 dev/brokers.py`): make `dev` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The public API tests and tools use (`from dev import brokers`), gathered from its parts.
from dev.brokerkit import cluster
from dev.brokerkit.kafka import (
    KafkaPaths,
    ensure_kafka_jars,
    kafka_down,
    kafka_launch,
    kafka_pid,
    kafka_start,
    kafka_status,
    kafka_stop,
    kafka_wait,
)
from dev.brokerkit.kafka_protocol import KafkaMetadata, kafka_metadata, kafka_ready
from dev.brokerkit.postgres import (
    PostgresServer,
    database_url,
    postgres_bin,
    postgres_down,
    postgres_status,
    postgres_up,
)
from dev.brokerkit.processes import broker_lock, free_port, owned_pid, port_open, spawn_detached, stop_pid
from dev.brokerkit.prometheus import (
    PrometheusServer,
    ensure_prometheus_installed,
    prometheus_binary,
    prometheus_status,
    prometheus_version,
    promtool_path,
    start_prometheus_server,
)
from dev.brokerkit.rabbitmq import (
    RabbitPaths,
    rabbitmq_down,
    rabbitmq_management_get,
    rabbitmq_pid,
    rabbitmq_status,
    rabbitmq_up,
    rabbitmq_wait,
)
from dev.brokerkit.settings import (
    DEV_DIR,
    REPO_ROOT,
    SERVICES,
    BrokerError,
    cache_dir,
    kafka_bootstrap,
    kafka_is_external,
    log,
    rabbitmq_is_external,
    rabbitmq_management_url,
    rabbitmq_url,
    run_dir,
)

__all__ = [
    "DEV_DIR",
    "REPO_ROOT",
    "SERVICES",
    "BrokerError",
    "KafkaMetadata",
    "KafkaPaths",
    "PostgresServer",
    "PrometheusServer",
    "RabbitPaths",
    "cache_dir",
    "database_url",
    "down",
    "ensure_kafka_jars",
    "free_port",
    "kafka_bootstrap",
    "kafka_is_external",
    "kafka_metadata",
    "kafka_pid",
    "kafka_ready",
    "kafka_start",
    "kafka_stop",
    "log",
    "main",
    "owned_pid",
    "port_open",
    "postgres_bin",
    "prometheus_binary",
    "prometheus_version",
    "promtool_path",
    "rabbitmq_is_external",
    "rabbitmq_management_get",
    "rabbitmq_management_url",
    "rabbitmq_pid",
    "rabbitmq_url",
    "rabbitmq_wait",
    "run_dir",
    "spawn_detached",
    "start_prometheus_server",
    "status",
    "stop_pid",
    "up",
]


def up(services: Sequence[str]) -> None:
    started = time.monotonic()
    with broker_lock():
        if "prometheus" in services:
            ensure_prometheus_installed()
        kafka_pid_to_wait = kafka_launch() if "kafka" in services else None
        if "rabbitmq" in services:
            rabbitmq_up()
        if "postgres" in services:
            postgres_up()
        if "kafka" in services:
            kafka_wait(kafka_pid_to_wait)
    log(f"ready in {time.monotonic() - started:.1f}s: {', '.join(services)}")
    status(services)


def down(services: Sequence[str]) -> None:
    with broker_lock():
        if "kafka" in services:
            kafka_down()
        if "rabbitmq" in services:
            rabbitmq_down()
        if "postgres" in services:
            postgres_down()
        if "prometheus" in services:
            log("Prometheus: nothing to stop (test servers stop with their tests)")


def status(services: Sequence[str]) -> bool:
    checks = {"kafka": kafka_status, "rabbitmq": rabbitmq_status, "prometheus": prometheus_status,
              "postgres": postgres_status}
    results = [checks[name]() for name in services]
    return all(results)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cluster"]:
        return cluster.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python3 -m dev.brokers", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "cluster"),
                        help="cluster: the local 3-node cluster (python3 dev/brokers.py cluster --help)")
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    services = tuple(dict.fromkeys(args.services)) or SERVICES
    try:
        if args.command == "up":
            up(services)
        elif args.command == "down":
            down(services)
        else:
            return 0 if status(services) else 1
    except BrokerError as exc:
        print(f"[brokers] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
