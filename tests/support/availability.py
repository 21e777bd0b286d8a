"""When a missing broker, binary or module fails the suite, and when it may skip a test.

Skipping is for one situation only: a developer ran the tests without any of the project's
brokers (nobody ran `make brokers-up`). Under CI (`CI=true`), or once any of the brokers answers
locally, whatever else is missing is a broken set-up and fails loudly: a run that skips what
it could not reach would look green while testing nothing.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import NoReturn

import pytest

from dev import brokers

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
START_HINT = "start them with: make brokers-up"
EXTERNAL_BROKER_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL")


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(address if "//" in address else f"//{address}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def brokers_up() -> bool:
    """Does any of the project's brokers answer (the Kafka or the RabbitMQ AMQP port)?"""
    kafka = _host_port(brokers.kafka_bootstrap().split(",")[0], brokers.kafka_port())
    rabbit = _host_port(brokers.rabbitmq_url(), brokers.rabbitmq_port())
    return any(brokers.port_open(host, port) for host, port in (kafka, rabbit))


def must_fail() -> bool:
    """True under CI and whenever the brokers are up: nothing may be skipped for lack of a set-up."""
    return IN_CI or brokers_up()


def unavailable(what: str, detail: str) -> NoReturn:
    """`what` cannot be used: fail (CI, or brokers up), or skip a run made without any broker."""
    overrides = [name for name in EXTERNAL_BROKER_VARIABLES if os.environ.get(name)]
    hint = f"check the brokers named by {', '.join(overrides)}" if overrides else START_HINT
    message = f"{what} is not available ({detail}); {hint}"
    if must_fail():
        pytest.fail(message, pytrace=False)
    pytest.skip(f"no broker is running, so this run tests no broker: {message}")
