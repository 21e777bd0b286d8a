"""Which work queues each process of an ordered consumer group consumes (RabbitMQ 3.10).

Ordered groups use single-active-consumer queues, and RabbitMQ 3.10 activates the consumer that
registered first: if every process subscribed to every queue, the first process would take all
of them and the others would only stand by. So the processes of a group agree on a share:

* Each process holds a *member slot*: an exclusive consumer (`basic.consume exclusive=True`) on a
  small classic queue `topo-members.{group exchange}.{k}`; it takes the lowest free `k`. The
  broker drops the consumer when the process's connection dies, which frees the slot.
* Every `REFRESH_SECONDS` a process counts the slots in use (their `queue.declare` consumer
  count, which is exact and immediate, unlike the management API's statistics) and takes the
  work queues `i` with `i % members == rank` (rank: position of its slot among the used ones).
* A process that must give a queue away cancels its consumer only once the core finished its
  work, and gives nothing back (see `handover`): single-active-consumer
  activates the next process at the cancel, and RabbitMQ 3.10 would deliver anything returned
  to the queue after the ready messages, i.e. after newer messages of the same key.

Two processes may briefly disagree (one saw a slot change before the other): both then consume
the same queue, and single-active-consumer still lets only one of them receive, so per-key order
never depends on the agreement, only the share of work does.

Slot queues are named outside the topology's `{topology}.` namespace so that `topo plan` does
not report them, and expire (`x-expires`) once no process has used them for ten minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pika.exceptions

SLOT_PREFIX = "topo-members"
SLOT_EXPIRES_MS = 600_000
REFRESH_SECONDS = 1.0
SLOT_MARGIN = 2  # slots probed beyond max(queues, own slot + 1): members that joined meanwhile
ACCESS_REFUSED = 403


def slot_queue(group_exchange: str, slot: int) -> str:
    return f"{SLOT_PREFIX}.{group_exchange}.{slot}"


def share(used_slots: Sequence[int], mine: int, queue_count: int) -> list[int]:
    """Indexes of the work queues the member holding `mine` consumes."""
    members = sorted(set(used_slots) | {mine})
    rank = members.index(mine)
    return [index for index in range(queue_count) if index % len(members) == rank]


def _ignore(*_args: Any) -> None:
    """Slot queues never receive messages."""


class Membership:
    """This process's member slot in one group, and the share of queues it implies."""

    def __init__(self, connection: Any, group_exchange: str, queue_count: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connection = connection
        self._base = group_exchange
        self._queue_count = queue_count
        self._clock = clock
        self._channel: Any = None
        self._slot: int | None = None
        self._next_refresh = 0.0

    @property
    def slot(self) -> int | None:
        return self._slot

    def due(self) -> bool:
        return self._clock() >= self._next_refresh

    def assignment(self) -> list[int]:
        """Probe the slots (joining first if needed) and return this member's queue indexes."""
        self._next_refresh = self._clock() + REFRESH_SECONDS
        if self._slot is None or self._channel is None or not self._channel.is_open:
            self._join()
        mine = self._slot
        assert mine is not None
        limit = max(self._queue_count, mine + 1) + SLOT_MARGIN
        used = [slot for slot in range(limit) if slot == mine or self._consumers(slot) > 0]
        return share(used, mine, self._queue_count)

    def _open(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
            self._slot = None  # a new channel holds no slot
        return self._channel

    def _consumers(self, slot: int) -> int:
        declared = self._open().queue_declare(slot_queue(self._base, slot), durable=False,
                                              arguments={"x-expires": SLOT_EXPIRES_MS})
        return int(declared.method.consumer_count)

    def _join(self) -> None:
        slot = 0
        while True:
            if self._consumers(slot) == 0:
                channel = self._channel
                try:
                    channel.basic_consume(slot_queue(self._base, slot), _ignore, auto_ack=True, exclusive=True)
                except pika.exceptions.ChannelClosedByBroker as error:
                    if error.reply_code != ACCESS_REFUSED:
                        raise
                    self._channel = None  # another process took it first: the channel is closed
                else:
                    self._slot = slot
                    return
            slot += 1
