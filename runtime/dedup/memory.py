"""The in-memory processed store: a window of recent event ids, lost on restart."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager

from topo.runtime.dedup.base import ProcessedStore, StoreBatch


class MemoryStore(ProcessedStore):
    """The `capacity` most recently processed event ids, in memory (lost on restart). Ids may be
    any hashable (the consume loop passes the UUID's integer: hashed in C, nothing formatted).

    The consume loop's fast path uses `seen` and `add` (the dictionary's own methods: no Python
    call per event) and calls `trim()` once per batch, so the window may exceed `capacity` by at
    most one batch in between."""

    durable = False

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("dedup capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[Hashable, None] = OrderedDict()
        self.seen: Callable[[Hashable], bool] = self._ids.__contains__
        self.add: Callable[[Hashable, None], None] = self._ids.__setitem__

    def begin(self) -> StoreBatch:
        return MemoryBatch(self)

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


class MemoryBatch(StoreBatch):
    """Marks take effect at once (there is nothing to commit); shares no transaction."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def mark(self, event_ids: Sequence[Hashable]) -> set[Hashable]:
        fresh: set[Hashable] = set()
        ids = self.store._ids
        for event_id in event_ids:
            if event_id not in ids:
                ids[event_id] = None
                fresh.add(event_id)
        return fresh

    def unmark(self, event_ids: Collection[Hashable]) -> None:
        for event_id in event_ids:
            self.store._ids.pop(event_id, None)

    def commit(self) -> None:
        self.store.trim()

    def abandon(self) -> None:
        """Marks are not transactional here: nothing to undo."""
