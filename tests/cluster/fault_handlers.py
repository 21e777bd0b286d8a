"""The handler of the fault tests' group (`fault_handlers:record`).

It records the invocation in the test's history (`TOPO_HISTORY_DIR`) and writes one row per
handled event through the SQLite dedup store's transaction: the row and the processed mark commit
together, so a duplicated side effect shows as two rows of one event id. The test turns the rows
into the history's `handled` records once the run is over.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.support.history import HistoryRecorder

EFFECTS = ("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
           "key TEXT NOT NULL, seq INTEGER NOT NULL, pid INTEGER NOT NULL, t REAL NOT NULL)")
RECORDER = HistoryRecorder.from_env("consumer")


def record(event: Any, context: Any) -> None:
    payload = event.payload
    if RECORDER is not None:
        RECORDER.invoke(str(event.event_id), payload.item, payload.seq)
    context.transaction.execute(EFFECTS)
    context.transaction.execute("INSERT INTO effects (event_id, key, seq, pid, t) VALUES (?, ?, ?, ?, ?)",
                                (str(event.event_id), payload.item, payload.seq, os.getpid(), time.time()))
