"""Committable positions for log-based transports (Kafka, memory): offsets may be settled out of
order (different keys run concurrently), but a position is only committed past a contiguous
settled prefix, so nothing unsettled is ever skipped after a restart."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

COMPACT_AFTER = 4096  # settled offsets kept at the front of `handed` before they are dropped


class OffsetTracker:
    """Offsets of one partition handed out and not yet committable; the committable position is
    one past the end of the contiguous settled prefix.

    `handed` holds the offsets handed out, ascending; those before `head` form the settled prefix.
    Settling in order (the usual case, a whole batch at once) only moves `head`; offsets settled
    behind an unsettled one wait in `early`."""

    __slots__ = ("committable", "committed", "early", "handed", "head")

    def __init__(self) -> None:
        self.handed: list[int] = []
        self.head = 0
        self.early: set[int] = set()
        self.committable: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self.handed.append(offset)

    def add_many(self, offsets: Sequence[int]) -> None:
        """`offsets` ascending, after every offset added before."""
        self.handed.extend(offsets)

    def done(self, offset: int) -> None:
        self.done_many([offset])

    def done_many(self, offsets: list[int]) -> None:
        """Settle `offsets`; any not handed out (released, or from before a seek: its redelivery
        is tracked instead) or already settled is ignored."""
        head, count = self.head, len(offsets)
        if not count:
            return
        if not self.early and self.handed[head:head + count] == offsets:
            self.head = head + count  # exactly the next ones, in order
            self.committable = offsets[-1] + 1
        else:
            for offset in offsets:
                self._done(offset)
        if self.head > COMPACT_AFTER and self.head * 2 > len(self.handed):
            del self.handed[:self.head]
            self.head = 0

    def _done(self, offset: int) -> None:
        handed, head = self.handed, self.head
        index = bisect_left(handed, offset, head)
        if index == len(handed) or handed[index] != offset or offset in self.early:
            return
        if index > head:
            self.early.add(offset)  # behind an unsettled offset: committable once that one is
            return
        early = self.early
        head += 1
        while head < len(handed) and handed[head] in early:
            early.discard(handed[head])
            head += 1
        self.head = head
        self.committable = handed[head - 1] + 1

    def forget_from(self, offset: int) -> None:
        """Offsets from `offset` on will be handed out again (a seek back): forget them."""
        cut = bisect_left(self.handed, offset, self.head)
        del self.handed[cut:]
        self.early = {o for o in self.early if o < offset}
