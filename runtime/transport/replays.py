"""What a replay records, for dead-letter readers that keep their letters (Kafka, memory).

A replay of every letter taken moves the replay position past them. A filtered replay
(`topo dlq replay --event-id/--since`) re-publishes some letters only: each run of selected
letters is recorded as a `Replay` range, the position moves only over letters replayed (now or
before), and a letter inside a recorded range is not taken again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from topo.runtime.transport.base import Replay


def covered(offset: int, replays: Iterable[Replay]) -> bool:
    return any(replay.first <= offset < replay.end for replay in replays)


def record(partition: int, position: int, taken: Sequence[int], selected: set[int], at: str,
           history: list[Replay]) -> tuple[int, list[Replay]]:
    """The new position and history of one partition after replaying `selected` of the `taken`
    offsets (ascending, the letters read from `position` on, including those skipped as replayed)."""
    runs: list[Replay] = []
    first: int | None = None
    last = 0
    for offset in taken:
        if offset in selected:
            first = offset if first is None else first
            last = offset
        elif first is not None:
            runs.append(Replay(partition, first, last + 1, at))
            first = None
    if first is not None:
        runs.append(Replay(partition, first, last + 1, at))
    replays = [*history, *runs]
    for offset in taken:
        if offset not in selected and not covered(offset, replays):
            break
        position = offset + 1
    return position, replays
