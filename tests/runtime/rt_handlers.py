"""Handlers the subprocess tests name in their topologies (`rt_handlers:record`).

`record` (SQLite) and `record_pg` (PostgreSQL) write one row per handled event through the dedup
store's transaction, so the row and the processed mark commit together: a duplicate side effect
would show as two rows.
"""

from __future__ import annotations

import os
import time
from typing import Any

EFFECTS = ("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
           "event_type TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, pid INTEGER NOT NULL)")


def record(event: Any, context: Any) -> None:
    delay = float(os.environ.get("RT_HANDLER_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    payload = event.payload
    key = getattr(payload, "sender", None) or getattr(payload, "token", "")
    context.transaction.execute(EFFECTS)
    context.transaction.execute(
        "INSERT INTO effects (event_id, event_type, key, seq, pid) VALUES (?, ?, ?, ?, ?)",
        (str(event.event_id), event.event_type, key, payload.seq, os.getpid()))


def record_pg(event: Any, context: Any) -> None:
    """`record` through the PostgreSQL store's transaction, into the table RT_EFFECTS_TABLE (the test creates it)."""
    delay = float(os.environ.get("RT_HANDLER_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    payload = event.payload
    key = getattr(payload, "sender", None) or getattr(payload, "token", "")
    table = os.environ["RT_EFFECTS_TABLE"]  # a test-made identifier: [a-z0-9_]
    context.transaction.execute(
        f"INSERT INTO {table} (event_id, event_type, key, seq, pid) VALUES (%s, %s, %s, %s, %s)",
        (str(event.event_id), event.event_type, key, payload.seq, os.getpid()))


def derive(event: Any, context: Any) -> None:
    """A consume-transform-produce step: one `tx.seen` per `token.moved`, sent with the input's commit."""
    delay = float(os.environ.get("RT_HANDLER_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    payload = event.payload
    context.publish({"chain_id": event.chain_id, "sender": payload.token, "seq": payload.seq}, event_type="tx.seen")
