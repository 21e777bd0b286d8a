"""topo reaches brokers over TLS and SASL whose material is given only in the environment, and says
in one line what to fix when it is wrong.

The module makes a CA and a server certificate for 127.0.0.1 with openssl, starts one Kafka node
with SSL and SASL_SSL (SCRAM-SHA-512) listeners and one RabbitMQ node with amqps, the management API
over https and a password user (their own ports and folders: the shared dev brokers are untouched),
and runs the real CLI against them: `topo apply`, `plan`, `publish`, `tail`, `run` (a handler sees
the event), `dlq list`, `dlq replay`, `lag` and `monitor`, each a subprocess given nothing but
environment variables. Then every one of those commands with a wrong password, with a CA that did
not sign the broker's certificate, and (the one-shot ones) with an unreachable broker: one line
naming the broker and the setting to fix, a non-zero exit, within 15 s, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
                    "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
                    "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_USER", "RABBITMQ_MANAGEMENT_PASSWORD", "RABBITMQ_SSL_CA_FILE",
                    "RABBITMQ_MANAGEMENT_URL", "RABBITMQ_MANAGEMENT_CACERT",
                    "TOPO_TOPOLOGY", "TOPO_BROKER")
HANDLER = '''\
import os


def handle(event):
    with open(os.environ["TLS_HANDLED_FILE"], "a") as out:
        out.write(event.payload.item + "\\n")
'''


RABBITMQ_USER = "topo-app"
RABBITMQ_PASSWORD = "rabbit-pw-never-printed"
WRONG_PASSWORD = "wrong-pw-never-printed"
BOUND = 15.0  # seconds every command gets to report a refusal


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the brokers' certificates: a client trusting only it must refuse them."""
    return make_certificates(tmp_path_factory.mktemp("foreign-ca")).ca


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
    node.add_user(RABBITMQ_USER, RABBITMQ_PASSWORD)
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


def monitor_serves(space: Workspace) -> None:
    """`topo monitor` polls the broker: /readyz turns 200 and /metrics has the group's member gauge."""
    monitor, monitor_log = space.start("monitor", "-t", space.topology, "--port", "0", "--interval", "1",
                                       log="monitor.log")
    try:
        def port() -> int | None:
            found = re.search(r"serving http://[\d.]+:(\d+)/metrics", monitor_log.read_text())
            return int(found.group(1)) if found else None

        wait_until(lambda: monitor.poll() is not None or port() is not None, COMMAND_TIMEOUT,
                   lambda: f"topo monitor to serve; it said:\n{monitor_log.read_text()}")
        base = f"http://127.0.0.1:{port()}"

        def answers(path: str) -> str | None:
            try:
                with urllib.request.urlopen(base + path, timeout=3) as response:
                    return str(response.read().decode())
            except (OSError, urllib.error.URLError):
                return None

        wait_until(lambda: answers("/readyz") is not None, COMMAND_TIMEOUT,
                   lambda: f"a successful poll (/readyz 200); topo monitor said:\n{monitor_log.read_text()}")
        metrics = answers("/metrics") or ""
        assert f'group="{GROUP}"' in metrics and "topo_consumergroup_members" in metrics, metrics[-2000:]
    finally:
        assert stop(monitor) == 0, monitor_log.read_text()


def walk_the_cli(space: Workspace, item: str) -> None:
    """apply, plan, then tail and run in the background, publish one event, see it in both, stop run,
    read lag and the (empty) dead letters, replay them, and serve the lag as metrics."""
    applied = json.loads(ok(space.topo("apply", "-t", space.topology, "--yes", "--json")))
    assert applied["status"] == "applied", applied
    assert "No changes" in ok(space.topo("plan", "-t", space.topology))

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
    letters = json.loads(ok(space.topo("dlq", "list", "-g", GROUP, "-t", space.topology, "--timeout", "3", "--json")))
    assert letters["dead_letters"] == [], letters
    assert "replayed 0" in ok(space.topo("dlq", "replay", "-g", GROUP, "-t", space.topology, "--timeout", "3"))
    monitor_serves(space)


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


def kafka_sasl_settings(node: TlsKafka, ca: Path, password: str | None = None) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": node.sasl_bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": node.sasl_user,
            "KAFKA_SASL_PASSWORD": password or node.sasl_password, "KAFKA_SSL_CA_LOCATION": str(ca)}


def rabbitmq_user_settings(node: TlsRabbitMQ, ca: Path, password: str = RABBITMQ_PASSWORD) -> dict[str, str]:
    """The password user's amqps URL; the management API takes the same user from it."""
    return {"RABBITMQ_URL": node.url_of(RABBITMQ_USER, password), "RABBITMQ_SSL_CA_FILE": str(ca),
            "RABBITMQ_MANAGEMENT_URL": node.management_url, "RABBITMQ_MANAGEMENT_CACERT": str(ca)}


@pytest.mark.kafka
def test_kafka_over_sasl_ssl_with_a_scram_user(tls_kafka: TlsKafka, certificates: Certificates, tmp_path: Path,
                                               unique_name: str) -> None:
    space = Workspace(tmp_path, unique_name, "kafka", kafka_sasl_settings(tls_kafka, certificates.ca))
    walk_the_cli(space, "over-sasl")


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


@pytest.mark.rabbitmq
def test_rabbitmq_over_amqps_with_a_password_user(tls_rabbitmq: TlsRabbitMQ, certificates: Certificates,
                                                  tmp_path: Path, unique_name: str) -> None:
    space = Workspace(tmp_path, unique_name, "rabbitmq", rabbitmq_user_settings(tls_rabbitmq, certificates.ca))
    walk_the_cli(space, "as-a-user")


# ---------------------------------------------------------------- refusals: one line, non-zero, within 15 s

COMMANDS: dict[str, list[str]] = {
    "publish": ["publish", EVENT, "--payload", '{"chain_id": 1, "item": "refused"}'],
    "tail": ["tail", EVENT, "--timeout", "2", "--limit", "1"],
    "dlq list": ["dlq", "list", "-g", GROUP, "--timeout", "2"],
    "dlq replay": ["dlq", "replay", "-g", GROUP, "--timeout", "2"],
    "lag": ["lag"],
    "plan": ["plan"],
    "apply": ["apply", "--yes"],
    "run": ["run", "-g", GROUP, "--metrics-port", "0"],
    "monitor": ["monitor", "--port", "0"],
}
# An unreachable broker: tests/runtime/test_broker_trouble.py covers the other commands (run and monitor
# stay up against it, not ready, retrying); a refusal ends them too, since waiting does not mend a password.
UNREACHABLE_HERE = ("plan", "dlq replay")
SITUATIONS = ("password", "ca", "unreachable")
# What the line must name: the setting to fix.
FIX = {("kafka", "password"): "KAFKA_SASL_PASSWORD", ("kafka", "ca"): "KAFKA_SSL_CA_LOCATION",
       ("kafka", "unreachable"): "KAFKA_BOOTSTRAP_SERVERS", ("rabbitmq", "password"): "RABBITMQ_URL",
       ("rabbitmq", "ca"): "RABBITMQ_SSL_CA_FILE", ("rabbitmq", "unreachable"): "RABBITMQ_URL"}
# lag, plan, apply and monitor of RabbitMQ talk to the management API.
MANAGEMENT_FIX = {"password": "RABBITMQ_MANAGEMENT", "ca": "RABBITMQ_MANAGEMENT_CACERT",
                  "unreachable": "RABBITMQ_MANAGEMENT_URL"}
CASES = [(broker, situation, command) for broker in ("kafka", "rabbitmq") for situation in SITUATIONS
         for command in (UNREACHABLE_HERE if situation == "unreachable" else COMMANDS)]


def refused_run(space: Workspace, command: str, env: dict[str, str]) -> tuple[int | None, str, float]:
    """The exit status (None: still running after the bound), stderr and seconds of one command."""
    started = time.monotonic()
    try:
        done = subprocess.run([*TOPO, *COMMANDS[command], "-t", space.topology], env=env, capture_output=True,
                              text=True, timeout=BOUND, check=False, cwd=space.folder)
    except subprocess.TimeoutExpired as expired:
        text = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        return None, text, time.monotonic() - started
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.fixture(scope="module")
def refusals(tls_kafka: TlsKafka, tls_rabbitmq: TlsRabbitMQ, certificates: Certificates, foreign_ca: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], tuple[int | None, str, float]]:
    """(broker, situation, command) -> what the command did; the topologies are applied first, so
    that only the credentials, the trust or the address is wrong."""
    good = {"kafka": kafka_sasl_settings(tls_kafka, certificates.ca),
            "rabbitmq": rabbitmq_user_settings(tls_rabbitmq, certificates.ca)}
    bad = {("kafka", "password"): kafka_sasl_settings(tls_kafka, certificates.ca, WRONG_PASSWORD),
           ("kafka", "ca"): kafka_sasl_settings(tls_kafka, foreign_ca),
           ("kafka", "unreachable"): {**good["kafka"], "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
           ("rabbitmq", "password"): rabbitmq_user_settings(tls_rabbitmq, certificates.ca, WRONG_PASSWORD),
           ("rabbitmq", "ca"): {**rabbitmq_user_settings(tls_rabbitmq, foreign_ca)},
           ("rabbitmq", "unreachable"): {**good["rabbitmq"],
                                         "RABBITMQ_URL": f"amqps://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@127.0.0.1:1/%2F",
                                         "RABBITMQ_MANAGEMENT_URL": "https://127.0.0.1:1"}}
    spaces = {}
    for broker in ("kafka", "rabbitmq"):
        name = f"t-refused-{broker}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        spaces[broker] = Workspace(tmp_path_factory.mktemp(f"refused-{broker}"), name, broker, good[broker])
        ok(spaces[broker].topo("apply", "-t", spaces[broker].topology, "--yes"))
    with ThreadPoolExecutor(max_workers=2) as pool:  # more would slow each command down on 2 cores
        futures = {case: pool.submit(refused_run, spaces[case[0]], case[2], {**spaces[case[0]].env, **bad[case[:2]]})
                   for case in CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.kafka
@pytest.mark.rabbitmq
@pytest.mark.timeout(900)  # the first case waits for both nodes and all 40 commands (about 2 minutes)
@pytest.mark.parametrize(("broker", "situation", "command"), CASES,
                         ids=[f"{b}-{s}-{c.replace(' ', '-')}" for b, s, c in CASES])
def test_a_refusal_is_one_line_naming_the_broker_and_the_setting(
        refusals: dict[tuple[str, str, str], tuple[int | None, str, float]], tls_kafka: TlsKafka,
        tls_rabbitmq: TlsRabbitMQ, broker: str, situation: str, command: str) -> None:
    status, stderr, seconds = refusals[(broker, situation, command)]
    assert status not in (None, 0), f"exit {status} after {seconds:.1f}s:\n{stderr}"
    assert seconds < BOUND
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and not [line for line in stderr.splitlines() if line.startswith("%")], stderr
    assert WRONG_PASSWORD not in stderr and RABBITMQ_PASSWORD not in stderr and tls_kafka.sasl_password not in stderr
    line = errors[0]
    uses_management = broker == "rabbitmq" and command in ("lag", "plan", "apply", "monitor")
    fix = MANAGEMENT_FIX[situation] if uses_management else FIX[(broker, situation)]
    assert fix in line, line
    address = ("127.0.0.1:1" if situation == "unreachable"
               else tls_kafka.sasl_bootstrap if broker == "kafka"
               else tls_rabbitmq.management_url if uses_management else f"127.0.0.1:{tls_rabbitmq.amqps_port}")
    assert address in line, line
