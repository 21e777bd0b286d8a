"""The one place the transport reaches into pika's internals (pinned in pyproject.toml).

tests/runtime/test_pika_compat.py checks, without a broker, every attribute and behaviour used
here against the installed pika; it fails when an upgrade changes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika.spec
from pika.adapters.blocking_connection import BlockingChannel


def cancel_keeping_deliveries(channel: BlockingChannel, consumer_tag: str,
                              on_cancel_ok: Callable[[Any], None]) -> None:
    """Send basic.cancel for `consumer_tag` and call `on_cancel_ok(frame)` at its cancel-ok, while
    deliveries that arrive meanwhile still reach the consumer's callback.

    pika's `BlockingChannel.basic_cancel` rejects (requeue=True) deliveries it has not dispatched
    yet and those arriving before cancel-ok; on a single-active-consumer queue they would reach the
    next consumer after newer messages of the same key. So the method goes through the channel's
    RPC machinery (pika 1.x `Channel._rpc` on `BlockingChannel._impl`) without marking the
    consumer as cancelled in pika. pika still lists the consumer and cancels it again (nowait; the
    broker ignores an unknown tag) when the channel closes. Raises pika's channel errors when the
    channel is closed.
    """
    cancel = pika.spec.Basic.Cancel(consumer_tag=consumer_tag)
    # acceptable replies must be a list: pika rejects tuples
    channel._impl._rpc(cancel, on_cancel_ok, [(pika.spec.Basic.CancelOk, {"consumer_tag": consumer_tag})])
