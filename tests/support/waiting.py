"""The one way tests await a condition: `wait_until` polls with a bounded timeout.

A sleep is never a synchronisation: a test waits for the state it needs (a row written, a queue
drained, a process gone) and fails with what it was waiting for, and the last value it saw, when
that state does not come within the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited condition did not hold within the timeout (a test failure, not an error)."""


def wait_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], *,
               interval: float = 0.1, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call `condition` until it returns something truthy and return that value.

    `what` describes the awaited state (a callable is asked only on failure, so it can report
    progress); `interval` is the pause between calls (0 for a condition that blocks by itself,
    e.g. one that polls a consumer); exceptions of the `ignore` types count as "not yet" and the
    last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = condition()
        except ignore as error:
            last = error
        else:
            if last:
                return last  # type: ignore[return-value]  # truthy, hence the condition's own value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {described} (last: {last!r})")
        if interval:
            time.sleep(interval)
