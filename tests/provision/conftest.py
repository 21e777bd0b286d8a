"""Fixtures of the provisioning tests: broker settings in the environment, topic clean-up, the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.provision.helpers import Cli, management_url_with_credentials


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def kafka_env(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str) -> str:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    return kafka_bootstrap


@pytest.fixture
def rabbit_env(monkeypatch: pytest.MonkeyPatch, rabbitmq_management: Any, rabbit_vhost: Any) -> str:
    """Points topo at the test's fresh vhost; returns the vhost name."""
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", management_url_with_credentials(rabbitmq_management))
    monkeypatch.setenv("RABBITMQ_URL", rabbit_vhost.url)
    monkeypatch.delenv("RABBITMQ_VHOST", raising=False)
    return str(rabbit_vhost.name)


@pytest.fixture
def topic_cleanup(kafka_admin: Any, unique_name: str) -> Iterator[None]:
    """Deletes every topic named after this test's topology at teardown."""
    yield
    names = [name for name in kafka_admin.list_topics(timeout=30).topics if name.startswith(unique_name)]
    if names:
        for future in kafka_admin.delete_topics(names, operation_timeout=60).values():
            future.result(timeout=60)


@pytest.fixture
def extra_vhosts(rabbitmq_management: Any, unique_name: str) -> Iterator[Callable[[str], str]]:
    """Factory: `make(suffix)` creates vhost `<unique_name>-<suffix>` usable by the test user; deleted after."""
    api = rabbitmq_management
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{unique_name}-{suffix}"
        api.put(f"/api/vhosts/{api.quote(name)}", json={"description": "pytest"})
        made.append(name)
        api.put(f"/api/permissions/{api.quote(name)}/{api.quote(api.user)}",
                json={"configure": ".*", "write": ".*", "read": ".*"})
        return name

    yield make
    for name in made:
        api.delete(f"/api/vhosts/{api.quote(name)}")
