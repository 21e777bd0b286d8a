"""Committable positions for log-based transports (Kafka, memory): offsets may be settled out of
order (different keys run concurrently), but a position is only committed past a contiguous
settled prefix, so nothing unsettled is ever skipped after a restart."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Offsets of one partition handed out and not yet committable; the committable position is
    one past the end of the contiguous settled prefix."""

    __slots__ = ("committable", "committed", "early", "order", "state")

    def __init__(self) -> None:
        self.order: deque[int] = deque()  # handed out, in order, up to the first unsettled one and beyond
        self.state: dict[int, bool] = {}  # offset in `order` -> settled
        self.early = 0  # settled offsets still behind an unsettled one
        self.committable: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self.state[offset] = False
        self.order.append(offset)

    def done(self, offset: int) -> None:
        state = self.state
        if state.get(offset) is not False:
            return  # released or from before a seek (its redelivery is tracked instead), or settled
        order = self.order
        if order[0] != offset:
            state[offset] = True  # behind an unsettled offset: committable once that one is
            self.early += 1
            return
        order.popleft()  # the usual case: settled in order
        del state[offset]
        self.committable = offset + 1
        while self.early and order and state[order[0]]:
            first = order.popleft()
            del state[first]
            self.early -= 1
            self.committable = first + 1

    def forget_from(self, offset: int) -> None:
        for pending in [o for o in self.state if o >= offset]:
            del self.state[pending]
        self.order = deque(o for o in self.order if o in self.state)
        self.early = sum(self.state.values())
