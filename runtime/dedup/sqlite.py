"""The SQLite processed store: ids in a file on this host; handlers share its transaction."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path

from topo.runtime.dedup.base import ProcessedStore, StoreBatch, StoreUnavailable

MARK = ("INSERT OR IGNORE INTO topo_processed (event_id) SELECT value FROM json_each(?) ORDER BY value "
        "RETURNING event_id")


class SQLiteStore(ProcessedStore):
    """Processed ids in a SQLite file: survives restarts; handlers can share its transaction.

    `context.transaction` is a `sqlite3.Connection` inside an open transaction (one connection
    per worker thread); whatever the handler executes on it commits together with the marks.
    WAL mode and a busy timeout let several processes of a group on one host share the file (they
    take turns on its one write lock, batch by batch). `retention` (ids kept) bounds the table:
    older ids are pruned every `prune_every` marks.
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
        self._next_prune = prune_every
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

    def begin(self) -> StoreBatch:
        connection = self.connection()
        try:
            # IMMEDIATE takes the write lock now, so the handlers' writes and the marks cannot deadlock.
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error
        return SQLiteBatch(self, connection)

    def is_processed(self, event_id: str) -> bool:
        row = self.connection().execute("SELECT 1 FROM topo_processed WHERE event_id = ?", (event_id,)).fetchone()
        return row is not None

    def after_commit(self, connection: sqlite3.Connection, marked: int) -> None:
        """Prune the oldest ids every `prune_every` marks (outside the batch's transaction)."""
        total = 0
        for _ in range(marked):
            total = next(self._marks)  # next() on a count is atomic: no lock
        if total >= self._next_prune:
            self._next_prune = total + self.prune_every
            connection.execute("DELETE FROM topo_processed WHERE rowid <= (SELECT MAX(rowid) FROM topo_processed) - ?",
                               (self.retention,))

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


class SQLiteBatch(StoreBatch):
    def __init__(self, store: SQLiteStore, connection: sqlite3.Connection) -> None:
        self.store = store
        self.transaction = connection
        self.marked = 0
        self.saved = False

    def _fail(self, error: sqlite3.Error) -> StoreUnavailable:
        self.abandon()
        return StoreUnavailable(f"sqlite {self.store.path}: {error}")

    def mark(self, event_ids: Sequence[Hashable]) -> set[Hashable]:
        try:
            # One statement for the batch (SQLite >= 3.35: RETURNING): the ids inserted now.
            rows = self.transaction.execute(MARK, (json.dumps([str(i) for i in event_ids]),)).fetchall()
        except sqlite3.Error as error:
            raise self._fail(error) from error
        fresh: set[Hashable] = {row[0] for row in rows}
        self.marked += len(fresh)
        return fresh

    def unmark(self, event_ids: Collection[Hashable]) -> None:
        if not event_ids:
            return
        try:
            self.transaction.executemany("DELETE FROM topo_processed WHERE event_id = ?", [(i,) for i in event_ids])
        except sqlite3.Error as error:
            raise self._fail(error) from error
        self.marked -= len(event_ids)

    def savepoint(self) -> None:
        try:
            if self.saved:
                self.transaction.execute("RELEASE handler")
            self.transaction.execute("SAVEPOINT handler")
        except sqlite3.Error as error:
            raise self._fail(error) from error
        self.saved = True

    def rollback_to_savepoint(self) -> None:
        try:
            self.transaction.execute("ROLLBACK TO handler")
        except sqlite3.Error as error:
            raise self._fail(error) from error

    def commit(self) -> None:
        try:
            self.transaction.execute("COMMIT")
        except sqlite3.Error as error:
            raise self._fail(error) from error
        self.store.after_commit(self.transaction, self.marked)

    def abandon(self) -> None:
        try:
            if self.transaction.in_transaction:
                self.transaction.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable; the next begin() reports it
