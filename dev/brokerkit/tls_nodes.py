"""Brokers with TLS listeners for tests: a Kafka node with SSL and SASL_SSL (SCRAM-SHA-512)
listeners, a RabbitMQ node with amqps and password users.

Each node is separate from the dev brokers (own ports, folder, RabbitMQ node name), lives in a
folder the test gives, serves a certificate from :mod:`dev.brokerkit.tls`, and stops with
``stop()``: the shared brokers on 9092/5672/15672 are never touched.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import shutil
import socket
import ssl
import string
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from dev.brokerkit.kafka import (
    KafkaPaths,
    ensure_kafka_jars,
    format_kafka_storage,
    kafka_java_argv,
    render_kafka_config,
)
from dev.brokerkit.kafka_protocol import kafka_ready
from dev.brokerkit.processes import free_port, group_members, port_open, spawn_detached, stop_group, tail
from dev.brokerkit.rabbitmq import RabbitPaths, ensure_rabbitmq_installed
from dev.brokerkit.settings import (
    DEV_DIR,
    KAFKA_START_TIMEOUT,
    RABBITMQ_START_TIMEOUT,
    BrokerError,
    log,
)
from dev.brokerkit.tls import Certificates

HOST = "127.0.0.1"
# The RabbitMQ node needs no Prometheus endpoint (its port would clash with the dev node's).
TLS_RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management")
# Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user and its home; the real script
# runs the node as we are, with the folders we give.
DEBIAN_RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def tls_handshake(port: int, ca: Path, timeout: float = 3.0) -> bool:
    """Does a listener on 127.0.0.1:``port`` complete a TLS handshake with a certificate ``ca`` signed?"""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=HOST):
            return True
    except (OSError, ssl.SSLError):
        return False


def _await(ready: Callable[[], bool], pgid: int, what: str, log_file: Path, timeout: float) -> None:
    """Poll ``ready()`` until true; fail when the process group died or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not group_members(pgid):
            raise BrokerError(f"{what} exited during start-up; {log_file} ends with:\n{tail(log_file)}")
        if time.monotonic() > deadline:
            stop_group(pgid, what, timeout=20)
            raise BrokerError(f"{what} did not start within {timeout:.0f}s; {log_file} ends with:\n{tail(log_file)}")
        time.sleep(0.25)


# The SCRAM user a TLS Kafka node is formatted with (its password is random per node).
KAFKA_SASL_USER = "topo-client"
SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclasses.dataclass
class TlsKafka:
    """A running single-node Kafka with SSL and SASL_SSL listeners (clients) and a PLAINTEXT one (itself)."""

    pid: int
    ssl_port: int
    sasl_port: int
    plaintext_port: int
    home: Path
    started_in: float  # seconds from launch to a verified TLS handshake
    sasl_user: str = KAFKA_SASL_USER
    sasl_password: str = dataclasses.field(default="", repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.ssl_port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_SSL listener: TLS, then SCRAM-SHA-512 with `sasl_user` / `sasl_password`."""
        return f"{HOST}:{self.sasl_port}"

    def stop(self) -> None:
        stop_group(self.pid, "TLS Kafka", timeout=30)


def start_tls_kafka(home: Path, certificates: Certificates, timeout: float = KAFKA_START_TIMEOUT) -> TlsKafka:
    """Format and start a KRaft node in ``home`` with a SCRAM-SHA-512 user of a random password;
    return once its SSL and SASL_SSL listeners serve ``certificates``."""
    started = time.monotonic()
    paths = dataclasses.replace(KafkaPaths.under(home), lib=KafkaPaths.current().lib)
    ensure_kafka_jars(paths)
    for folder in (paths.home, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    port, controller_port, ssl_port, sasl_port = free_port(), free_port(), free_port(), free_port()
    overlay = string.Template((DEV_DIR / "kafka" / "tls.properties.template").read_text()).substitute(
        port=port, controller_port=controller_port, ssl_port=ssl_port, sasl_port=sasl_port,
        keystore=certificates.keystore,
    )
    render_kafka_config(paths, port, controller_port, overlay)
    password = secrets.token_urlsafe(16)
    # SCRAM credentials live in the cluster metadata: written at format time, before the first start.
    format_kafka_storage(paths, "--add-scram", f"{SCRAM_MECHANISM}=[name={KAFKA_SASL_USER},password={password}]")
    argv = kafka_java_argv(paths, "kafka.Kafka", str(paths.config))
    pid = spawn_detached(argv, paths.logs / "kafka.out", cwd=paths.home)
    log(f"TLS Kafka: started pid {pid}, SSL on {HOST}:{ssl_port}")
    _await(lambda: kafka_ready(f"{HOST}:{port}") is not None and tls_handshake(ssl_port, certificates.ca)
           and tls_handshake(sasl_port, certificates.ca), pid, "TLS Kafka", paths.logs / "server.log", timeout)
    return TlsKafka(pid=pid, ssl_port=ssl_port, sasl_port=sasl_port, plaintext_port=port, home=home,
                    started_in=time.monotonic() - started, sasl_password=password)


@dataclasses.dataclass
class TlsRabbitMQ:
    """A running RabbitMQ node reachable only over TLS: amqps and the management API over https."""

    pid: int
    node: str
    amqps_port: int
    management_port: int
    home: Path
    ca: Path
    started_in: float  # seconds from launch to an answering management API over https

    @property
    def url(self) -> str:
        return f"amqps://guest:guest@{HOST}:{self.amqps_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"https://{HOST}:{self.management_port}"

    def url_of(self, user: str, password: str) -> str:
        """The amqps URL of this node's default vhost for ``user`` (quoted)."""
        quoted = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        return f"amqps://{quoted}@{HOST}:{self.amqps_port}/%2F"

    def _request(self, method: str, path: str, body: object = None) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.management_url}{path}", data=data, method=method)
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        request.add_header("Content-Type", "application/json")
        return request

    def overview(self) -> dict[str, object] | None:
        """GET /api/overview over https, verifying the server with the CA; None when it does not answer."""
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(self._request("GET", "/api/overview"), timeout=3, context=context) as response:
                body = json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return body if isinstance(body, dict) else None

    def add_user(self, user: str, password: str) -> None:
        """A password user with every permission on the default vhost, management tag included
        (topo's lag and apply read and write through the management API)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        quoted = urllib.parse.quote(user, safe="")
        for method, path, body in (
                ("PUT", f"/api/users/{quoted}", {"password": password, "tags": "administrator"}),
                ("PUT", f"/api/permissions/%2F/{quoted}", {"configure": ".*", "write": ".*", "read": ".*"})):
            with urllib.request.urlopen(self._request(method, path, body), timeout=10, context=context):
                pass

    def stop(self) -> None:
        stop_group(self.pid, f"TLS RabbitMQ {self.node}", timeout=60)


def _rabbitmq_server() -> str:
    if DEBIAN_RABBITMQ_SERVER.exists():
        return str(DEBIAN_RABBITMQ_SERVER)
    found = shutil.which("rabbitmq-server")
    if not found:
        raise BrokerError("rabbitmq-server not found: run `make brokers-up` first")
    return found


def start_tls_rabbitmq(home: Path, certificates: Certificates,
                       timeout: float = RABBITMQ_START_TIMEOUT) -> TlsRabbitMQ:
    """Start a RabbitMQ node of its own in ``home``; return once amqps and https answer with ``certificates``."""
    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    ensure_rabbitmq_installed(RabbitPaths.current())
    if not port_open(HOST, 4369):
        raise BrokerError("epmd is not running: start the dev RabbitMQ first (make brokers-up)")
    amqps_port, management_port, dist_port = free_port(), free_port(), free_port()
    config = home / "rabbitmq.conf"
    config.write_text(string.Template((DEV_DIR / "rabbitmq" / "tls.conf.template").read_text()).substitute(
        amqps_port=amqps_port, management_port=management_port,
        ca=certificates.ca, certificate=certificates.certificate, key=certificates.key,
    ))
    plugins = home / "enabled_plugins"
    plugins.write_text(f"[{','.join(TLS_RABBITMQ_PLUGINS)}].\n")
    env_file = home / "rabbitmq-env.conf"
    env_file.write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf: this node sets everything below
    node = f"topo-tls-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),  # its own Erlang cookie
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
    }
    log_file = home / "rabbitmq.out"
    pid = spawn_detached([_rabbitmq_server()], log_file, cwd=home, env=env)
    log(f"TLS RabbitMQ: started node {node} (pid {pid}), amqps on {HOST}:{amqps_port}, https on {management_port}")
    rabbit = TlsRabbitMQ(pid=pid, node=node, amqps_port=amqps_port, management_port=management_port,
                         home=home, ca=certificates.ca, started_in=0.0)
    _await(lambda: rabbit.overview() is not None and tls_handshake(amqps_port, certificates.ca),
           pid, f"TLS RabbitMQ {node}", log_file, timeout)
    rabbit.started_in = time.monotonic() - started
    return rabbit
