"""Handlers the subprocess tests name in their topologies (`rt_handlers:record`).

`record` writes one row per handled event through the SQLite dedup store's transaction, so the
row and the processed mark commit together: a duplicate side effect would show as two rows.
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
