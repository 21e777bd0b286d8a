"""A consumer's broker connection as the operator sees it: each change (unreachable, lost,
restored) is logged once, /readyz follows it, and reconnection attempts back off.

`topo run` against a broker that is down does not exit: it says so once, stays not ready and
retries (1 s, 2 s, 4 s ... up to `MAX_BACKOFF`) until the broker answers or it is stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from topo.runtime.transport.base import BrokerUnreachable

log = logging.getLogger("topo.runtime")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 15.0


class BrokerLink:
    """Connection state of one group's member: `up()` / `down(reason)` report changes only."""

    def __init__(self, group: str, state: Any = None) -> None:
        self.group = group
        self.state = state  # topo.runtime.observe.health.RuntimeState, or None
        self.connected: bool | None = None  # None: not tried yet
        self.ever_connected = False
        self.backoff = FIRST_BACKOFF

    def up(self) -> None:
        self.backoff = FIRST_BACKOFF
        if self.connected:
            return
        if self.connected is False:
            log.warning("group %s: %s", self.group,
                        "broker connection restored" if self.ever_connected else "broker reachable now")
        self.connected = self.ever_connected = True
        if self.state is not None:
            self.state.set_connected(True)

    def down(self, reason: str) -> None:
        if self.connected is False:
            return
        what = "broker connection lost: " if self.ever_connected else ""
        log.error("group %s: %s%s; retrying until it answers (not ready meanwhile)", self.group, what, reason)
        self.connected = False
        if self.state is not None:
            self.state.set_connected(False)

    def reach(self, probe: Callable[[], None], stop: threading.Event, ends: float | None) -> bool:
        """Call `probe` until it does not raise BrokerUnreachable (True), backing off between
        attempts; False when `stop` is set or `ends` (monotonic) passes first. Other errors
        (NotProvisioned: the topology is not applied) propagate."""
        while not stop.is_set():
            try:
                probe()
            except BrokerUnreachable as error:
                self.down(str(error))
                wait = self.backoff if ends is None else min(self.backoff, max(0.0, ends - time.monotonic()))
                if stop.wait(wait) or (ends is not None and time.monotonic() >= ends):
                    return False
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                continue
            return True
        return False
