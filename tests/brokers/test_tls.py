"""topo reaches brokers over TLS whose certificate a private CA signed, given only in the environment.

The test makes a CA and a server certificate for 127.0.0.1 with openssl, starts a Kafka node with
an SSL listener and a RabbitMQ node with amqps and the management API over https (their own
ports and folders: the shared dev brokers are untouched), and runs the real CLI against them:
`topo apply`, `publish`, `tail`, `run` (a handler sees the event) and `lag`, each a subprocess
given nothing but environment variables. Without the CA the same client fails to verify the
server: TLS is really in use, and the CA is what makes it work.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.brokerkit.tls import Certificates, make_certificates
from dev.brokerkit.tls_nodes import TlsKafka, TlsRabbitMQ, start_tls_kafka, start_tls_rabbitmq
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
TOPO = [sys.executable, "-m", "topo"]
EVENT = "item.added"
GROUP = "watcher"
COMMAND_TIMEOUT = 120.0
HANDLED_TIMEOUT = 90.0
# Client settings that must not leak in from the caller's environment: each case sets its own.
# The system's CA settings (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE) stay, as users have
# them: topo's own CA variables must win over them.
BROKER_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CA_LOCATION",
                    "RABBITMQ_URL", "RABBITMQ_SSL_CA_FILE", "RABBITMQ_MANAGEMENT_URL", "RABBITMQ_MANAGEMENT_CACERT",
                    "TOPO_TOPOLOGY", "TOPO_BROKER")
HANDLER = '''\
import os


def handle(event):
    with open(os.environ["TLS_HANDLED_FILE"], "a") as out:
        out.write(event.payload.item + "\\n")
'''


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def tls_kafka(kafka_bootstrap: str, certificates: Certificates,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    """A Kafka node of this module with an SSL listener (the dev broker must be installed: its jars)."""
    node = start_tls_kafka(tmp_path_factory.mktemp("tls-kafka"), certificates)
    print(f"TLS Kafka ready in {node.started_in:.1f}s on {node.bootstrap}")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def tls_rabbitmq(rabbitmq_url: str, certificates: Certificates,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbitMQ]:
    """A RabbitMQ node of this module with amqps and https only (beside the dev node, sharing its epmd)."""
    node = start_tls_rabbitmq(tmp_path_factory.mktemp("tls-rabbitmq"), certificates)
    print(f"TLS RabbitMQ ready in {node.started_in:.1f}s: {node.url} {node.management_url}")
    yield node
    node.stop()


def document(name: str, broker: str) -> dict[str, Any]:
    """One chain, one event, one group whose handler appends the event's item to a file."""
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": broker, "kafka": {"partitions": 1, "replication_factor": 1},
                   "rabbitmq": {"exchange": f"{name}.events", "partitions": 1}},
        "chains": {1: {"name": "ethereum"}},
        "events": {EVENT: {"producers": ["feeder"], "key": "item", "payload": {"item": "string"}}},
        "consumer_groups": {GROUP: {"subscribes": [EVENT], "handler": "tls_handlers:handle"}},
    }


class Workspace:
    """A throwaway topology compiled by `topo generate`, its handler, and the environment to run topo in."""

    def __init__(self, folder: Path, name: str, broker: str, settings: dict[str, str]) -> None:
        self.folder = folder
        (folder / "topology.yaml").write_text(yaml.safe_dump(document(name, broker), sort_keys=False))
        (folder / "tls_handlers.py").write_text(HANDLER)
        self.handled = folder / "handled.txt"
        base = {key: value for key, value in os.environ.items() if key not in BROKER_VARIABLES}
        pythonpath = os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])
        self.env = {**base, **settings, "PYTHONPATH": pythonpath, "TLS_HANDLED_FILE": str(self.handled)}
        generated = self.topo("generate", "-t", str(folder / "topology.yaml"), "-o", str(folder / "generated"))
        assert generated.returncode == 0, generated.stderr
        self.topology = str(folder / "generated" / "topology.json")

    def topo(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TOPO, *args], env=env or self.env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False, cwd=self.folder)

    def start(self, *args: str, log: str) -> tuple[subprocess.Popen[str], Path]:
        path = self.folder / log
        with path.open("w") as out:
            process = subprocess.Popen([*TOPO, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       text=True, cwd=self.folder)
        return process, path

    def without(self, *variables: str) -> dict[str, str]:
        return {key: value for key, value in self.env.items() if key not in variables}


def stop(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit status (a process that ignores SIGTERM for 60 s is killed and fails the test)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def walk_the_cli(space: Workspace, item: str) -> None:
    """apply, then tail and run in the background, publish one event, see it in both, stop run, read lag."""
    applied = json.loads(ok(space.topo("apply", "-t", space.topology, "--yes", "--json")))
    assert applied["status"] == "applied", applied

    tail, tail_log = space.start("tail", EVENT, "-t", space.topology, "--limit", "1", "--timeout", "90",
                                 log="tail.log")
    run, run_log = space.start("run", "-g", GROUP, "-t", space.topology, "--shutdown-timeout", "10", log="run.log")
    try:
        # A tail sees what is published once it says it is ready (a RabbitMQ tail binds its own queue).
        wait_until(lambda: tail.poll() is not None or "tailing" in tail_log.read_text(), COMMAND_TIMEOUT,
                   "topo tail to be ready")
        published = json.loads(ok(space.topo("publish", EVENT, "-t", space.topology,
                                             "--payload", json.dumps({"chain_id": 1, "item": item}))))

        assert tail.wait(COMMAND_TIMEOUT) == 0, tail_log.read_text()
        tailed = [json.loads(line) for line in tail_log.read_text().splitlines() if line.startswith("{")]
        assert [entry["event"]["event_id"] for entry in tailed] == [published["event_id"]], tail_log.read_text()

        wait_until(lambda: space.handled.exists() and item in space.handled.read_text().split(),
                   HANDLED_TIMEOUT, lambda: f"the handler to see {item}; topo run said:\n{run_log.read_text()}")
    finally:
        status = stop(run)
        if tail.poll() is None:
            stop(tail)
    assert status == 0, run_log.read_text()

    # The handled event was settled before `topo run` exited: nothing of the group is left behind.
    lag = json.loads(ok(space.topo("lag", "-t", space.topology, "-g", GROUP, "--json")))
    assert [group["group"] for group in lag["groups"]] == [GROUP], lag
    assert lag["groups"][0]["streams"] and lag["groups"][0]["sum_lag"] == 0, lag


VERIFY_FAILED = re.compile(r"certificate verify failed|CERTIFICATE_VERIFY_FAILED", re.IGNORECASE)


@pytest.mark.kafka
def test_kafka_over_tls_with_a_private_ca(tls_kafka: TlsKafka, certificates: Certificates, tmp_path: Path,
                                          unique_name: str) -> None:
    settings = {"KAFKA_BOOTSTRAP_SERVERS": tls_kafka.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CA_LOCATION": str(certificates.ca)}
    space = Workspace(tmp_path, unique_name, "kafka", settings)
    walk_the_cli(space, "over-tls")

    # Without the CA the system's trust store is used, which does not know the test's CA.
    refused = space.topo("publish", EVENT, "-t", space.topology, "--payload", '{"chain_id": 1, "item": "refused"}',
                         env=space.without("KAFKA_SSL_CA_LOCATION"))
    assert refused.returncode != 0, refused.stdout
    assert VERIFY_FAILED.search(refused.stderr), refused.stderr[-2000:]


@pytest.mark.rabbitmq
def test_rabbitmq_over_amqps_with_a_private_ca(tls_rabbitmq: TlsRabbitMQ, certificates: Certificates,
                                               tmp_path: Path, unique_name: str) -> None:
    settings = {"RABBITMQ_URL": tls_rabbitmq.url, "RABBITMQ_SSL_CA_FILE": str(certificates.ca),
                "RABBITMQ_MANAGEMENT_URL": tls_rabbitmq.management_url,
                "RABBITMQ_MANAGEMENT_CACERT": str(certificates.ca)}
    space = Workspace(tmp_path, unique_name, "rabbitmq", settings)
    walk_the_cli(space, "over-amqps")

    refused = space.topo("publish", EVENT, "-t", space.topology, "--payload", '{"chain_id": 1, "item": "refused"}',
                         env=space.without("RABBITMQ_SSL_CA_FILE"))
    assert refused.returncode != 0, refused.stdout
    assert VERIFY_FAILED.search(refused.stdout + refused.stderr), refused.stderr[-2000:]

    unverified_api = space.topo("lag", "-t", space.topology, "--json", env=space.without("RABBITMQ_MANAGEMENT_CACERT"))
    assert unverified_api.returncode != 0, unverified_api.stdout
    assert VERIFY_FAILED.search(unverified_api.stdout + unverified_api.stderr), unverified_api.stderr[-2000:]
