"""Settings of the dev brokers: folders, ports and URLs from the environment; the shared error and log line."""

from __future__ import annotations

import os
from pathlib import Path

DEV_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = DEV_DIR.parent

KAFKA_VERSION = os.environ.get("TOPO_KAFKA_VERSION", "4.4.0")
KAFKA_HEAP = os.environ.get("TOPO_KAFKA_HEAP", "512m")
RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management", "rabbitmq_prometheus")
SERVICES = ("kafka", "rabbitmq", "prometheus", "postgres")

KAFKA_START_TIMEOUT = 120.0
RABBITMQ_START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class BrokerError(RuntimeError):
    """A broker could not be installed, started, reached or stopped."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def run_dir() -> Path:
    return Path(os.environ.get("TOPO_RUN_DIR") or REPO_ROOT / ".run").resolve()


def cache_dir() -> Path:
    explicit = os.environ.get("TOPO_CACHE_DIR")
    if explicit:
        return Path(explicit).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "topo"


def kafka_port() -> int:
    return _env_int("TOPO_KAFKA_PORT", 9092)


def kafka_controller_port() -> int:
    return _env_int("TOPO_KAFKA_CONTROLLER_PORT", 9093)


def rabbitmq_port() -> int:
    return _env_int("TOPO_RABBITMQ_PORT", 5672)


def kafka_bootstrap() -> str:
    """Bootstrap servers the tests should use (``KAFKA_BOOTSTRAP_SERVERS`` overrides)."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{kafka_port()}"


def rabbitmq_url() -> str:
    return os.environ.get("RABBITMQ_URL") or f"amqp://guest:guest@127.0.0.1:{rabbitmq_port()}/%2F"


def rabbitmq_management_url() -> str:
    return os.environ.get("RABBITMQ_MANAGEMENT_URL") or "http://127.0.0.1:15672"


def kafka_is_external() -> bool:
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


def rabbitmq_is_external() -> bool:
    return bool(os.environ.get("RABBITMQ_URL"))


def log(message: str) -> None:
    print(f"[brokers] {message}", flush=True)
