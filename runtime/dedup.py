"""Processed-event stores: deduplication by `event_id`.

The consume loop asks `is_processed(event_id)` before running a handler, and runs the handler
inside `processing(event_id)`: the context manager yields a store-specific transaction object
(handed to the handler as `context.transaction`) and, when the block exits without an
exception, marks the event processed AND commits that transaction as one unit. A handler that
writes its side effects through that transaction therefore makes them atomic with the mark:
after a crash either both happened or neither, so a redelivered event is skipped exactly when
its effects are already there.

Writing another store (Redis, Postgres): subclass `ProcessedStore`.

* `is_processed(event_id) -> bool`: has `event_id` been marked? Called concurrently from worker
  threads; must be thread-safe. May forget old ids (bounded stores): dedup then covers a window.
* `processing(event_id)`: a context manager; yields the object handlers may use to join the mark's
  transaction (Postgres: a connection inside `BEGIN`, with `INSERT INTO processed ... ON CONFLICT
  DO NOTHING` executed before `COMMIT`; Redis: a pipeline executed with `MULTI`/`EXEC` plus
  `SET event_id 1 NX EX ttl`), or None when the store cannot share a transaction. On an exception
  it rolls back and re-raises, leaving the event unmarked.
* `close()`: release connections.

Events with the same key are never processed concurrently, and the runtime never runs two
attempts of one delivery at once, but two processes of a group may briefly process the same
event during a rebalance: a store shared between processes (SQLite on one host, Postgres, Redis)
must make the mark itself conflict-safe.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from topo.core.interpolate import expand
from topo.core.model import ConsumerGroup


class ProcessedStore(ABC):
    @abstractmethod
    def is_processed(self, event_id: str) -> bool: ...

    @abstractmethod
    @contextmanager
    def processing(self, event_id: str) -> Iterator[Any]: ...

    def close(self) -> None:  # noqa: B027 - stores without resources need nothing
        """Release resources."""


class MemoryStore(ProcessedStore):
    """The `capacity` most recently processed event ids, in memory (lost on restart). Ids may be
    any hashable (the consume loop passes the UUID's integer: hashed in C, nothing formatted).

    The consume loop's fast path uses `seen` and `add` (the dictionary's own methods: no Python
    call per event) and calls `trim()` once per batch, so the window may exceed `capacity` by at
    most one batch in between."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("dedup capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[Hashable, None] = OrderedDict()
        self.seen: Callable[[Hashable], bool] = self._ids.__contains__
        self.add: Callable[[Hashable, None], None] = self._ids.__setitem__

    def is_processed(self, event_id: Hashable) -> bool:
        return event_id in self._ids

    @contextmanager
    def processing(self, event_id: Hashable) -> Iterator[None]:
        yield None
        self.mark(event_id)

    def mark(self, event_id: Hashable) -> None:
        self._ids[event_id] = None
        self.trim()

    def trim(self) -> None:
        # No lock: each OrderedDict operation is atomic under the GIL, and a race between two
        # workers can only evict one id too many from a window this large.
        ids = self._ids
        while len(ids) > self.capacity:
            with contextlib.suppress(KeyError):
                ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


class SQLiteStore(ProcessedStore):
    """Processed ids in a SQLite file: survives restarts; handlers can share its transaction.

    `context.transaction` is a `sqlite3.Connection` inside an open transaction (one connection
    per worker thread); whatever the handler executes on it commits together with the mark.
    WAL mode and a busy timeout let several processes of a group on one host share the file.
    `retention` (ids kept) bounds the table: older ids are pruned every `prune_every` marks.
    """

    SCHEMA = ("CREATE TABLE IF NOT EXISTS topo_processed (event_id TEXT PRIMARY KEY, "
              "processed_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))")

    def __init__(self, path: str | Path, retention: int = 1_000_000, prune_every: int = 10_000,
                 busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.prune_every = prune_every
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._marks = itertools.count(1)
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(self.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (created on first use)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def is_processed(self, event_id: str) -> bool:
        row = self.connection().execute("SELECT 1 FROM topo_processed WHERE event_id = ?", (event_id,)).fetchone()
        return row is not None

    @contextmanager
    def processing(self, event_id: str) -> Iterator[sqlite3.Connection]:
        connection = self.connection()
        # IMMEDIATE takes the write lock now, so the handler's writes and the mark cannot deadlock.
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("INSERT OR IGNORE INTO topo_processed (event_id) VALUES (?)", (event_id,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        self._after_mark(connection)

    def _after_mark(self, connection: sqlite3.Connection) -> None:
        if next(self._marks) % self.prune_every == 0:  # next() on a count is atomic: no lock per event
            connection.execute("DELETE FROM topo_processed WHERE rowid <= (SELECT MAX(rowid) FROM topo_processed) - ?",
                               (self.retention,))

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


def store_for(group: ConsumerGroup, state_dir: Path | None = None) -> ProcessedStore:
    """The store a group's `dedup` settings ask for (`${VAR}` in the path expanded now)."""
    settings = group.dedup
    if settings.store == "memory":
        return MemoryStore(settings.capacity)
    if settings.path:
        path = Path(expand(settings.path))
    else:
        base = state_dir or Path(os.environ.get("TOPO_STATE_DIR", ".topo-state"))
        path = base / f"{group.name}.sqlite"
    return SQLiteStore(path, retention=max(settings.capacity, 1))
