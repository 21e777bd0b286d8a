"""Processed-event stores: deduplication by `event_id` (the interface: `topo.runtime.dedup.base`).

`memory` (a window of recent ids in the process), `sqlite` (a file on one host) and `postgres`
(one table for every process of a group, on any host); `store_for` picks a group's.
"""

from topo.runtime.dedup.base import ProcessedStore, StoreBatch, StoreUnavailable
from topo.runtime.dedup.factory import store_for
from topo.runtime.dedup.memory import MemoryStore
from topo.runtime.dedup.sqlite import SQLiteStore

__all__ = ["MemoryStore", "ProcessedStore", "SQLiteStore", "StoreBatch", "StoreUnavailable", "store_for"]
