"""The PostgreSQL processed store: one table shared by every process of a group, on any host.

`context.transaction` is a psycopg 3 `Connection` inside the transaction that also marks the
batch's events; what a handler executes on it commits together with the marks. Connections come
from a `psycopg_pool.ConnectionPool` (one per worker at a time; a broken one is replaced by the
pool). The table (`dedup.table`, an identifier the topology validates; statements are composed
with `psycopg.sql`, never by formatting) is created on first use.

Conflict safety across processes: the marks are one `INSERT ... ON CONFLICT DO NOTHING RETURNING`
of the batch's ids in sorted order (every process locks ids in the same order). An id that a
concurrent transaction inserted makes this one wait for it: committed, the id comes back as a
duplicate and its handler never runs here; rolled back, it is marked here. A deadlock or
serialization failure is reported as `StoreUnavailable`: the batch is retried.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from topo.runtime.dedup.base import ProcessedStore, StoreBatch, StoreUnavailable

CONNECT_TIMEOUT = 5  # seconds: an unreachable server is reported (and retried) rather than waited on
POOL_WAIT = 5.0  # seconds a worker waits for a pooled connection before reporting the store unavailable


class PostgresStore(ProcessedStore):
    """Processed ids in a PostgreSQL table; the handlers' writes share the marks' transaction."""

    def __init__(self, dsn: str, table: str = "topo_processed", retention: int = 1_000_000,
                 prune_every: int = 10_000, max_connections: int = 16) -> None:
        self.table = sql.Identifier(table)
        self.where = self._where(dsn)
        self.retention = retention
        self.prune_every = prune_every
        self._next_prune = prune_every
        self._marked = 0
        self._lock = threading.Lock()
        self._ready = False  # the table exists
        self.pool = ConnectionPool(dsn, min_size=1, max_size=max(1, max_connections), open=False,
                                   kwargs={"connect_timeout": CONNECT_TIMEOUT, "autocommit": False},
                                   name=f"topo-dedup-{table}")
        self.pool.open(wait=False)  # connects in the background: a server that is down is retried
        t = self.table
        # Event ids are UUIDs (the envelope's type): 16-byte keys keep the primary key's index small.
        self.mark_sql = sql.SQL("INSERT INTO {t} (event_id) SELECT id FROM unnest(%s::uuid[]) AS id ORDER BY id "
                                "ON CONFLICT DO NOTHING RETURNING event_id::text, seq").format(t=t)
        self.unmark_sql = sql.SQL("DELETE FROM {t} WHERE event_id = ANY(%s::uuid[])").format(t=t)
        self.lookup_sql = sql.SQL("SELECT 1 FROM {t} WHERE event_id = %s::uuid").format(t=t)
        self.prune_sql = sql.SQL("DELETE FROM {t} WHERE seq <= %s").format(t=t)
        self.schema_sql = [
            sql.SQL("CREATE TABLE IF NOT EXISTS {t} (event_id uuid PRIMARY KEY, "
                    "seq bigint GENERATED ALWAYS AS IDENTITY, "
                    "processed_at timestamptz NOT NULL DEFAULT now())").format(t=t),
            # seq only grows: a BRIN index (a few pages, nearly free to maintain) serves the prune's range.
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING brin (seq)").format(
                i=sql.Identifier(f"{table}_seq"), t=t),
        ]
        self._newest = 0  # the highest seq this process marked (the prune keeps `retention` below it)

    @staticmethod
    def _where(dsn: str) -> str:
        """host:port/database of the DSN, for messages (never its credentials)."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            return "postgres (unparsable dsn)"
        return f"postgres {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _connection(self) -> psycopg.Connection[Any]:
        try:
            connection = self.pool.getconn(timeout=POOL_WAIT)
        except PoolTimeout as error:
            raise StoreUnavailable(f"{self.where}: no connection within {POOL_WAIT:g}s ({error})") from None
        if not self._ready:
            self._create_table(connection)
        return connection

    def _create_table(self, connection: psycopg.Connection[Any]) -> None:
        with self._lock:
            if self._ready:
                return
            try:
                with connection.transaction():
                    # Serialise concurrent creators (CREATE ... IF NOT EXISTS races on the catalog).
                    connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table.as_string(None),))
                    for statement in self.schema_sql:
                        connection.execute(statement)
            except psycopg.Error as error:
                self._release(connection, broken=True)
                raise StoreUnavailable(f"{self.where}: creating the table: {error}") from None
            self._ready = True

    def _release(self, connection: psycopg.Connection[Any], broken: bool = False) -> None:
        if broken and not connection.closed:
            try:
                connection.rollback()
            except psycopg.Error:
                connection.close()  # the pool replaces a closed connection
        self.pool.putconn(connection)

    def begin(self) -> StoreBatch:
        return PostgresBatch(self, self._connection())

    def is_processed(self, event_id: str) -> bool:
        connection = self._connection()
        try:
            return connection.execute(self.lookup_sql, (event_id,)).fetchone() is not None
        except psycopg.Error as error:
            raise StoreUnavailable(f"{self.where}: {error}") from None
        finally:
            self._release(connection, broken=True)  # ends the read's transaction

    def after_commit(self, connection: psycopg.Connection[Any], marked: int, newest: int) -> None:
        """Prune the oldest ids every `prune_every` marks (its own short transaction)."""
        with self._lock:
            self._marked += marked
            self._newest = max(self._newest, newest)
            due = self._marked >= self._next_prune
            if due:
                self._next_prune = self._marked + self.prune_every
            below = self._newest - self.retention
        if due and below > 0:
            connection.execute(self.prune_sql, (below,))
            connection.commit()

    def close(self) -> None:
        self.pool.close()


class PostgresBatch(StoreBatch):
    def __init__(self, store: PostgresStore, connection: psycopg.Connection[Any]) -> None:
        self.store = store
        self.transaction = connection
        self.marked = 0
        self.newest = 0
        self.saved = False
        self.open = True

    def _fail(self, error: psycopg.Error) -> StoreUnavailable:
        self.abandon()
        return StoreUnavailable(f"{self.store.where}: {type(error).__name__}: {str(error).strip()}")

    def mark(self, event_ids: Sequence[Hashable]) -> set[Hashable]:
        try:
            rows = self.transaction.execute(self.store.mark_sql, ([str(i) for i in event_ids],)).fetchall()
        except psycopg.Error as error:
            raise self._fail(error) from None
        self.marked += len(rows)
        if rows:
            self.newest = max(self.newest, max(row[1] for row in rows))
        return {row[0] for row in rows}

    def unmark(self, event_ids: Collection[Hashable]) -> None:
        if not event_ids:
            return
        try:
            self.transaction.execute(self.store.unmark_sql, ([str(i) for i in event_ids],))
        except psycopg.Error as error:
            raise self._fail(error) from None
        self.marked -= len(event_ids)

    def savepoint(self) -> None:
        # One round trip: release the previous event's savepoint and open this one's.
        statement = "RELEASE SAVEPOINT handler; SAVEPOINT handler" if self.saved else "SAVEPOINT handler"
        try:
            self.transaction.execute(statement)
        except psycopg.Error as error:
            raise self._fail(error) from None
        self.saved = True

    def rollback_to_savepoint(self) -> None:
        try:
            self.transaction.execute("ROLLBACK TO SAVEPOINT handler")
        except psycopg.Error as error:
            raise self._fail(error) from None

    def commit(self) -> None:
        connection = self.transaction
        try:
            connection.commit()
            self.store.after_commit(connection, self.marked, self.newest)
        except psycopg.Error as error:
            raise self._fail(error) from None
        self.open = False
        self.store._release(connection)

    def abandon(self) -> None:
        if self.open:
            self.open = False
            self.store._release(self.transaction, broken=True)
