"""The processed-store interface: deduplication by `event_id`, atomic with a handler's side effects.

A worker handles a batch of events inside ONE store transaction (`ProcessedStore.begin()` ->
`StoreBatch`), and only after `commit()` hands the successes to the runner to settle (ack or
offset commit). Per batch:

* `mark(ids)` marks every id of the batch at once and returns those marked now; any other id was
  processed before (or by a concurrent process, whose transaction this one waited for): a
  duplicate, not handed to its handler. One statement per batch, not one per event.
* A handler that takes a context runs between `savepoint()` and, when it raised,
  `rollback_to_savepoint()`: it writes its side effects through `transaction` (handed to it as
  `context.transaction`), and a failing handler rolls back only its own effects.
* `unmark(ids)` forgets the marks of events that did not succeed (a failure, or events left for
  the next transaction), so they are handled again.
* `commit()` makes marks and side effects durable together: after a crash either both happened or
  neither, so a redelivered event is skipped exactly when its effects are there.

Any failure of the store's own statements (server down, connection lost, deadlock with another
process) raises `StoreUnavailable` after rolling the transaction back: nothing of the batch was
handed over yet, so the worker retries it with backoff and nothing is lost.

Writing another store (Redis, ...): subclass `ProcessedStore` and `StoreBatch`. A store shared
between processes must make `mark` itself conflict-safe (two processes of a group may briefly hold
the same event during a rebalance).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class StoreUnavailable(Exception):
    """The store's own statement failed; the open transaction was rolled back."""


class StoreBatch(ABC):
    """One open store transaction of one worker."""

    transaction: Any = None  # what a handler receives as `context.transaction` (None: nothing to share)

    @abstractmethod
    def mark(self, event_ids: Sequence[Hashable]) -> set[Hashable]:
        """Mark `event_ids` processed (in this transaction); the ids marked now (the rest: duplicates)."""

    @abstractmethod
    def unmark(self, event_ids: Collection[Hashable]) -> None:
        """Forget marks made by this transaction."""

    def savepoint(self) -> None:  # noqa: B027 - a store without a shared transaction needs none
        """Before a handler that may write through `transaction`."""

    def rollback_to_savepoint(self) -> None:  # noqa: B027 - see `savepoint`
        """That handler raised: undo its writes, keep the rest of the batch."""

    @abstractmethod
    def commit(self) -> None:
        """Make the marks and the handlers' writes durable, together; ends the batch."""

    @abstractmethod
    def abandon(self) -> None:
        """Roll back and release (never raises); ends the batch."""


class ProcessedStore(ABC):
    durable = True  # the consume loop group-commits through `begin()`; MemoryStore has a fast path

    @abstractmethod
    def begin(self) -> StoreBatch:
        """A new transaction for this thread (raises StoreUnavailable)."""

    @abstractmethod
    def is_processed(self, event_id: str) -> bool: ...

    @contextmanager
    def processing(self, event_id: str) -> Iterator[Any]:
        """One event in its own transaction: yields `transaction`; marks and commits when the block
        succeeds, rolls back when it raises. (The consume loop batches; this serves tools and tests.)"""
        batch = self.begin()
        try:
            yield batch.transaction
            batch.mark([event_id])
            batch.commit()
        except BaseException:
            batch.abandon()
            raise

    def close(self) -> None:  # noqa: B027 - stores without resources need nothing
        """Release resources."""
