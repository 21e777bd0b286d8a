"""Slow and stalled consumers, judged by the lag monitor over a sliding window of its samples.

For every event stream of a group (Kafka partition of an event topic, RabbitMQ work queue; retry
streams are delayed on purpose and not judged), over the samples of the last `window` seconds
plus the newest sample at or before the window's start (so the history spans the whole window):

* stalled: lag > 0 in every sample and the consumed position never moved. Window: the group's
  `alerts.stalled.for`.
* slow (Burrow's WARN): lag > 0 in every sample, the position advanced, and the lag never fell
  from one sample to the next: the consumer works but does not keep up. Window: the group's
  `alerts.consumer_lag.for`.

A stream whose history does not yet span the window is neither. A group is stalled if any
stream is; slow if any stream is slow and none stalled.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from topo.core.model import ConsumerGroup, Topology
from topo.runtime.observe.lag import KIND_EVENTS, Snapshot

Sample = tuple[float, int, int]  # (time, position or -1, lag)


@dataclass(frozen=True)
class GroupStatus:
    group: str
    slow: bool
    stalled: bool
    detail: str  # the first offending stream, for humans

    @property
    def label(self) -> str:
        return "stalled" if self.stalled else "slow" if self.slow else "ok"


def window_samples(history: deque[Sample], now: float, window: float) -> list[Sample] | None:
    """Samples covering [now - window, now], anchored at the newest one at or before the start."""
    start = now - window
    anchor = None
    for index, sample in enumerate(history):
        if sample[0] <= start:
            anchor = index
    if anchor is None:
        return None
    return list(history)[anchor:]


def is_stalled(samples: list[Sample]) -> bool:
    return len(samples) >= 2 and all(s[2] > 0 for s in samples) and len({s[1] for s in samples}) == 1


def is_slow(samples: list[Sample]) -> bool:
    if len(samples) < 2 or not all(s[2] > 0 for s in samples):
        return False
    advanced = samples[-1][1] > samples[0][1]
    never_fell = all(later[2] >= earlier[2] for earlier, later in itertools.pairwise(samples))
    return advanced and never_fell


class ProgressTracker:
    def __init__(self, topology: Topology) -> None:
        self.groups: dict[str, ConsumerGroup] = {g.name: g for g in topology.groups}
        self._history: dict[tuple[str, str, int], deque[Sample]] = {}

    def observe(self, snapshot: Snapshot) -> dict[str, GroupStatus]:
        now = snapshot.taken_at
        statuses = {}
        for group_lag in snapshot.groups:
            group = self.groups[group_lag.group]
            stall_window = group.alerts.stalled_for_seconds
            slow_window = group.alerts.lag_for_seconds
            keep = max(stall_window, slow_window)
            stalled: list[str] = []
            slow: list[str] = []
            for stream in group_lag.streams:
                if stream.kind != KIND_EVENTS:
                    continue
                history = self._history.setdefault((group.name, stream.topic, stream.partition), deque())
                position = stream.position if stream.position is not None else -1
                history.append((now, position, stream.lag))
                while len(history) > 1 and history[1][0] <= now - keep:
                    history.popleft()
                name = f"{stream.topic}[{stream.partition}]"
                stall_samples = window_samples(history, now, stall_window)
                if stall_samples is not None and is_stalled(stall_samples):
                    stalled.append(f"{name}: lag {stream.lag} and no progress for {stall_window:g}s")
                    continue
                slow_samples = window_samples(history, now, slow_window)
                if slow_samples is not None and is_slow(slow_samples):
                    slow.append(f"{name}: consuming but lag never fell over {slow_window:g}s (now {stream.lag})")
            detail = (stalled or slow or [""])[0]
            statuses[group.name] = GroupStatus(group.name, slow=bool(slow) and not stalled, stalled=bool(stalled),
                                               detail=detail)
        return statuses
