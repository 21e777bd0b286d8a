"""Shared pytest fixtures: real Kafka, RabbitMQ and Prometheus (started by ``make brokers-up``).

Fixture API (see docs/development.md, "Tests"):

* ``kafka_bootstrap`` (session) -> ``"127.0.0.1:9092"``; ``KAFKA_BOOTSTRAP_SERVERS`` overrides.
* ``kafka_admin`` (session) -> ``confluent_kafka.admin.AdminClient``.
* ``kafka_topics`` (function) -> ``create(suffix="events", partitions=1, config=None) -> topic name``;
  the topics are deleted after the test.
* ``kafka_broker`` (function) -> :class:`KafkaBroker` (``stop()``, ``start()``, ``restart()``) for the
  local broker; its data survive; it is running again after the test.
* ``rabbitmq_url`` (session) -> amqp URL of the default vhost; ``RABBITMQ_URL`` overrides.
* ``rabbitmq_management`` (session) -> :class:`RabbitManagement` (``url``, ``user``, ``password``,
  ``get``/``put``/``delete``); ``RABBITMQ_MANAGEMENT_URL`` overrides.
* ``rabbit_vhost`` (function) -> :class:`RabbitVhost` (``name``, ``url``): a fresh vhost, deleted after.
* ``promtool`` (session) -> path of ``promtool``.
* ``prometheus_server`` (function) -> ``start(config, rules_dir=None) -> PrometheusHandle``; stopped after.
* ``unique_name`` (function) -> ``"t-<8 hex>"``, a prefix for this test's topics, groups, queues...
* ``local_cluster`` (function) -> :class:`tests.support.cluster.LocalCluster`: the 3-node Kafka and
  RabbitMQ cluster (``make cluster-up``); its tests are marked ``cluster`` and run only with
  ``--cluster`` (``make test-faults``).

A broker is checked once per session.  When it does not answer the test fails under ``CI=true`` or
when any of the brokers is up (a partial set-up is broken, see ``tests/support/availability.py``),
and is skipped only in a run made without any broker, with the command that starts them.
Tests await conditions with ``tests.support.waiting.wait_until`` (bounded, says what it awaited).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dev import brokers  # noqa: E402  (stdlib-only broker manager at the repository root)
from tests.support.availability import IN_CI, unavailable  # noqa: E402
from tests.support.cluster import cluster_session, local_cluster  # noqa: E402, F401  (fixtures)
from tests.support.waiting import wait_until  # noqa: E402

BROKER_MARKERS = {
    "kafka": "needs a running Kafka broker (make brokers-up)",
    "rabbitmq": "needs a running RabbitMQ node (make brokers-up)",
    "prometheus": "needs promtool / a Prometheus server binary (make brokers-up)",
    "cluster": "needs the local 3-node cluster (make cluster-up); runs only with --cluster (make test-faults)",
    "postgres": "needs a running PostgreSQL server (make brokers-up)",
}
# A test that uses one of these fixtures gets the matching marker, so `-m "not kafka"` selects well.
FIXTURE_MARKERS = {
    "kafka_bootstrap": "kafka",
    "kafka_admin": "kafka",
    "kafka_topics": "kafka",
    "kafka_broker": "kafka",
    "rabbitmq_url": "rabbitmq",
    "rabbitmq_management": "rabbitmq",
    "rabbit_vhost": "rabbitmq",
    "promtool": "prometheus",
    "prometheus_server": "prometheus",
    "local_cluster": "cluster",
    "postgres_url": "postgres",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true",
                     help="also run the tests marked cluster (they need `make cluster-up`; make test-faults)")


def pytest_configure(config: pytest.Config) -> None:
    for name, description in BROKER_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in names and item.get_closest_marker(marker) is None:  # keywords also hold folder names
                item.add_marker(marker)
    # The cluster costs a minute and ~3 GB: its tests run in `make test-faults`, not in `make test`.
    if not config.getoption("--cluster"):
        deselected = [item for item in items if item.get_closest_marker("cluster")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker("cluster")]


def broker_unavailable(what: str, detail: str) -> NoReturn:
    """Fail under CI or with the brokers up, skip a run made without any broker; says how to start it."""
    unavailable(what, detail)


@pytest.fixture
def unique_name() -> str:
    """A short prefix unique to this test: lowercase letter first, then letters, digits and '-'."""
    return f"t-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The shared server's URL (make brokers-up, or DATABASE_URL); tests use tables of their own."""
    import psycopg

    url = brokers.database_url()
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        broker_unavailable("PostgreSQL", f"{url.rsplit('@', 1)[-1]}: {error}")
    return url


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = brokers.kafka_bootstrap()
    if brokers.kafka_ready(bootstrap) is None:
        broker_unavailable("Kafka", f"no metadata from {bootstrap}")
    return bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def kafka_topics(kafka_admin: Any, unique_name: str) -> Iterator[Callable[..., str]]:
    """Factory: ``create(suffix="events", partitions=1, config=None) -> "<unique_name>-<suffix>"``.

    The topic exists with a leader for every partition when it returns; it is deleted at teardown.
    """
    from confluent_kafka.cimpl import NewTopic

    created: list[str] = []

    def create(suffix: str = "events", partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = f"{unique_name}-{suffix}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=-1, config=dict(config or {}))
        kafka_admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        created.append(name)

        def has_leaders() -> bool:
            meta = kafka_admin.list_topics(topic=name, timeout=10).topics.get(name)
            return bool(
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            )

        wait_until(has_leaders, 30, f"leaders of topic {name}")
        return name

    yield create
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            future.result(timeout=60)


@dataclass(frozen=True)
class KafkaBroker:
    """The local broker started by ``make brokers-up``: stop it, start it again; its data stay."""

    bootstrap: str

    def stop(self) -> None:
        brokers.kafka_stop()

    def start(self) -> None:
        brokers.kafka_start()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def kafka_broker(kafka_bootstrap: str) -> Iterator[KafkaBroker]:
    """Control of the local Kafka process, for tests of broker restarts; it runs again after the test."""
    if brokers.kafka_is_external() and not IN_CI:
        pytest.skip("not applicable: KAFKA_BOOTSTRAP_SERVERS names a broker this test cannot restart "
                    f"({kafka_bootstrap})")
    if brokers.kafka_is_external() or brokers.kafka_pid() is None:
        broker_unavailable("A Kafka broker started by `make brokers-up`", f"{kafka_bootstrap} is not ours")
    yield KafkaBroker(bootstrap=kafka_bootstrap)
    if brokers.kafka_ready() is None:
        brokers.kafka_start()


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitManagement:
    """The management HTTP API: ``get(path)`` returns JSON; ``put``/``delete`` return the response."""

    url: str
    user: str
    password: str
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self.session.auth = (self.user, self.password)

    @staticmethod
    def quote(name: str) -> str:
        """Quote one path segment (vhost "/" is "%2F")."""
        return urllib.parse.quote(name, safe="")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.url.rstrip("/") + path, timeout=self.timeout, **kwargs)
        response.raise_for_status()
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def put(self, path: str, json: Any = None) -> requests.Response:
        return self.request("PUT", path, json=json if json is not None else {})

    def post(self, path: str, json: Any = None) -> requests.Response:
        return self.request("POST", path, json=json if json is not None else {})

    def delete(self, path: str) -> requests.Response:
        return self.request("DELETE", path)


@dataclass(frozen=True)
class RabbitVhost:
    name: str
    url: str


def _amqp_user(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(url)
    return urllib.parse.unquote(parsed.username or "guest"), urllib.parse.unquote(parsed.password or "guest")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    import pika

    url = brokers.rabbitmq_url()
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    problem = None
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:  # pika raises many types; any of them means "not reachable"
        problem = f"{type(exc).__name__} connecting to {params.host}:{params.port}"
    if problem:
        broker_unavailable("RabbitMQ", problem)
    return url


@pytest.fixture(scope="session")
def rabbitmq_management(rabbitmq_url: str) -> RabbitManagement:
    raw = brokers.rabbitmq_management_url()
    parsed = urllib.parse.urlsplit(raw)
    default_user, default_password = _amqp_user(rabbitmq_url)
    user = urllib.parse.unquote(parsed.username or os.environ.get("RABBITMQ_MANAGEMENT_USER", default_user))
    password = urllib.parse.unquote(parsed.password or os.environ.get("RABBITMQ_MANAGEMENT_PASSWORD", default_password))
    netloc = parsed.hostname or "127.0.0.1"
    if parsed.port:
        netloc += f":{parsed.port}"
    url = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
    api = RabbitManagement(url=url, user=user, password=password)
    problem = None
    try:
        api.get("/api/overview")
    except requests.RequestException as exc:
        problem = f"{type(exc).__name__} at {url}"
    if problem:
        broker_unavailable("RabbitMQ management API", problem)
    return api


@pytest.fixture
def rabbit_vhost(rabbitmq_url: str, rabbitmq_management: RabbitManagement, unique_name: str) -> Iterator[RabbitVhost]:
    """A fresh vhost named after the test, usable by the amqp user; deleted with all it holds after."""
    api = rabbitmq_management
    name = unique_name
    path = f"/api/vhosts/{api.quote(name)}"
    api.put(path, json={"description": "pytest", "tags": "test"})
    try:
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        for user in dict.fromkeys((_amqp_user(rabbitmq_url)[0], api.user)):
            api.put(f"/api/permissions/{api.quote(name)}/{api.quote(user)}", json=everything)
        wait_until(
            lambda: api.get(f"/api/aliveness-test/{api.quote(name)}").get("status") == "ok",
            30,
            f"vhost {name} to accept connections",
        )
        parsed = urllib.parse.urlsplit(rabbitmq_url)
        url = urllib.parse.urlunsplit(
            (parsed.scheme, parsed.netloc, "/" + api.quote(name), parsed.query, parsed.fragment)
        )
        yield RabbitVhost(name=name, url=url)
    finally:
        api.delete(path)


# --------------------------------------------------------------------------- Prometheus


@pytest.fixture(scope="session")
def promtool() -> str:
    path = brokers.promtool_path()
    if not path:
        broker_unavailable("promtool", "not installed")
    return path


@dataclass
class PrometheusHandle:
    """A running Prometheus server: ``url``, ``pid``, and small helpers over its HTTP API."""

    server: brokers.PrometheusServer
    config: dict[str, Any]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        return self.server.pid

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path.lstrip('/')}", params=params or None, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def reload(self) -> None:
        requests.post(f"{self.url}/-/reload", timeout=30).raise_for_status()


PrometheusFactory = Callable[..., PrometheusHandle]


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """Factory: ``start(config, rules_dir=None) -> PrometheusHandle`` on a free 127.0.0.1 port.

    ``config`` is a mapping, YAML text or a path to a prometheus.yml.  With ``rules_dir`` its
    ``rule_files`` become ``<rules_dir>/*.yml`` and ``*.yaml``.  Servers stop at teardown.
    """
    if not brokers.prometheus_binary():
        broker_unavailable("Prometheus", "the prometheus binary is not installed")
    started: list[PrometheusHandle] = []

    def start(config: Mapping[str, Any] | str | Path, rules_dir: Path | None = None) -> PrometheusHandle:
        if isinstance(config, Path):
            loaded = yaml.safe_load(config.read_text()) or {}
        elif isinstance(config, str):
            loaded = yaml.safe_load(config) or {}
        else:
            loaded = dict(config)
        if rules_dir is not None:
            rules = Path(rules_dir).resolve()
            loaded["rule_files"] = [str(rules / "*.yml"), str(rules / "*.yaml")]
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir(parents=True)
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(loaded, sort_keys=False))
        server = brokers.start_prometheus_server(config_file, workdir)
        handle = PrometheusHandle(server=server, config=loaded)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.server.stop()
