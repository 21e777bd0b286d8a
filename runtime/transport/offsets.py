"""Committable positions for log-based transports (Kafka, memory): offsets may be settled out of
order (different keys run concurrently), but a position is only committed past a contiguous
settled prefix, so nothing unsettled is ever skipped after a restart."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Offsets of one partition handed out and not yet committable; the committable position is
    one past the end of the contiguous settled prefix."""

    __slots__ = ("committable", "committed", "order", "state")

    def __init__(self) -> None:
        self.order: deque[int] = deque()
        self.state: dict[int, bool] = {}
        self.committable: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self.state[offset] = False
        self.order.append(offset)

    def done(self, offset: int) -> None:
        state = self.state
        if offset not in state:
            return  # released or from before a seek: its redelivery is tracked instead
        state[offset] = True
        order = self.order
        while order and state.get(order[0], False):
            first = order.popleft()
            del state[first]
            self.committable = first + 1

    def forget_from(self, offset: int) -> None:
        for pending in [o for o in self.state if o >= offset]:
            del self.state[pending]
        self.order = deque(o for o in self.order if o in self.state)
