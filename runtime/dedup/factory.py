"""The store a group's `dedup` settings ask for."""

from __future__ import annotations

import os
from pathlib import Path

from topo.core.interpolate import expand
from topo.core.model import ConsumerGroup
from topo.runtime.dedup.base import ProcessedStore
from topo.runtime.dedup.memory import MemoryStore
from topo.runtime.dedup.sqlite import SQLiteStore


def store_for(group: ConsumerGroup, state_dir: Path | None = None, workers: int = 8) -> ProcessedStore:
    """The store of `group` (`${VAR}` in its path or DSN expanded now); `workers` sizes a connection pool."""
    settings = group.dedup
    if settings.store == "memory":
        return MemoryStore(settings.capacity)
    if settings.store == "postgres":
        from topo.runtime.dedup.postgres import PostgresStore  # psycopg only for groups that use it

        assert settings.dsn is not None  # validation requires it
        return PostgresStore(expand(settings.dsn), settings.table, retention=max(settings.capacity, 1),
                             max_connections=workers + 2)
    if settings.path:
        path = Path(expand(settings.path))
    else:
        base = state_dir or Path(os.environ.get("TOPO_STATE_DIR", ".topo-state"))
        path = base / f"{group.name}.sqlite"
    return SQLiteStore(path, retention=max(settings.capacity, 1))
