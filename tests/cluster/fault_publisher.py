"""The publishing side of a fault test, run as its own process: `python -m fault_publisher
GENERATED BROKER HISTORY_DIR STOP_FILE RATE KEYS`.

Publishes `item.added` events at RATE per second over KEYS keys (per-key `seq` 1, 2, 3, ...) with
topo's own publisher until STOP_FILE exists, then flushes. Every attempt and every outcome is
recorded in the history (tests/support/history.py): `attempt`, then `ack` (the broker confirmed
it) or `fail` (reported failed, or `publish` raised). A failed publish is not retried: its `seq`
stays a gap, so per-key order stays checkable.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from tests.support.history import HistoryRecorder
from topo.runtime.app import Runtime
from topo.runtime.transport.base import DeliveryReport, TransportError

EVENT = "item.added"


def main(generated: str, broker: str, history_dir: str, stop_file: str, rate: str, keys: str) -> int:
    interval = 1.0 / float(rate)
    names = [f"key-{index}" for index in range(int(keys))]
    sequence = dict.fromkeys(names, 0)
    runtime = Runtime.from_generated(Path(generated), broker=broker, producer="feeder")
    with HistoryRecorder(history_dir, "publisher") as history:
        publisher = runtime.publisher()
        published = 0
        started = time.monotonic()
        while not Path(stop_file).exists():
            key = names[published % len(names)]
            sequence[key] += 1
            event_id = uuid.uuid4()

            def outcome(report: DeliveryReport, event: str = str(event_id)) -> None:
                if report.error is None:
                    history.ack(event)
                else:
                    history.fail(event, report.error)

            history.attempt(str(event_id), key, sequence[key])
            try:
                publisher.publish({"chain_id": 1, "item": key, "seq": sequence[key]}, event_type=EVENT,
                                  event_id=event_id, on_delivery=outcome)
            except TransportError as error:
                history.fail(str(event_id), f"raised: {error}")
            published += 1
            publisher.poll(0)
            # Keep the rate: the next publish is due at started + published * interval.
            while (delay := started + published * interval - time.monotonic()) > 0:
                publisher.poll(delay)
        publisher.flush(60)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
