"""Broker client logs (librdkafka, pika) through Python logging, deduplicated and rate-limited.

librdkafka writes `%3|...|FAIL|...` lines to stderr by itself unless given a `logger`: every Kafka
client topo opens gets `kafka_client_logger()` (config key `logger`), which forwards to the
Python logger `topo.client.kafka`. pika logs through `pika.*` already. `route_client_logs` sets
both to WARNING (DEBUG with `--log-level debug`) and installs `RepeatFilter` on the handlers, so
a broker that stays down produces one line per distinct message per window, plus a count of
what was suppressed. Connection failures are demoted to INFO: topo reports those itself, in its
own words, naming the address and the setting (`probe` of each transport, `topo plan`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

KAFKA_LOGGER = "topo.client.kafka"
PIKA_LOGGER = "pika"
PIKA_CONNECTION_LOGGER = "pika.adapters"
CLIENT_LOGGERS = (KAFKA_LOGGER, PIKA_LOGGER)
REPEAT_WINDOW = 60.0  # seconds during which a repeated client message is counted, not printed

# librdkafka log facilities that only say "cannot connect": reported by topo itself.
_CONNECTION_FACILITIES = frozenset({"FAIL", "BRKMAIN", "CONNECT"})
# Parts of a message that differ between repeats of the same event (times, counters, addresses of objects).
_VOLATILE = re.compile(r"\d+(\.\d+)?\s*ms|after \d+ms|#\d+|0x[0-9a-f]+|\d+/\d+")


class RepeatFilter(logging.Filter):
    """Passes the first of equal messages (same logger, level, text up to volatile numbers) within
    `window` seconds and drops the rest; the next one that passes says how many were dropped."""

    def __init__(self, window: float = REPEAT_WINDOW, prefixes: tuple[str, ...] = CLIENT_LOGGERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.prefixes = prefixes
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last shown, dropped since)

    def _applies(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._applies(record.name):
            return True
        key = (record.name, record.levelno, _VOLATILE.sub("#", record.getMessage()))
        now = self.clock()
        with self._lock:
            shown, dropped = self._seen.get(key, (float("-inf"), 0))
            if now - shown < self.window:
                self._seen[key] = (shown, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # forget the oldest: a long-running process must not grow
                oldest = min(self._seen, key=lambda k: self._seen[k][0])
                del self._seen[oldest]
        if dropped:
            record.msg = f"{record.getMessage()} (repeated {dropped} more times in {self.window:g}s)"
            record.args = None
        return True


class KafkaClientLog:
    """The object given to librdkafka as `logger`: confluent-kafka calls `log(level, fmt, *args)`
    with the facility and message; connection failures are demoted to INFO, the latest one is
    kept so that topo's own error can say why the broker was unreachable."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(KAFKA_LOGGER)
        self._lock = threading.Lock()
        self._last_failure: str | None = None
        self._failures = 0

    def log(self, level: int, msg: str, *args: Any, **_kwargs: Any) -> None:
        text = msg % args if args else msg
        facility = args[0] if args and isinstance(args[0], str) else ""
        if facility in _CONNECTION_FACILITIES or "brokers are down" in text:
            with self._lock:
                self._last_failure = _reason(text)
                self._failures += 1
            level = min(level, logging.INFO)
        self.logger.log(level, "%s", text)

    @property
    def failures(self) -> int:
        """How many connection failures were reported so far (to tell new ones from old)."""
        with self._lock:
            return self._failures

    @property
    def last_failure(self) -> str | None:
        """The latest connection failure librdkafka reported (e.g. "Connection refused"), or None."""
        with self._lock:
            return self._last_failure


def _reason(text: str) -> str:
    """"...: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)"
    -> "Connect to ipv4#127.0.0.1:1 failed: Connection refused"."""
    text = re.sub(r"\s*\(after \d+ms in state \w+\)", "", text)
    parts = text.split(": ", 2)
    return parts[-1] if len(parts) == 3 else text


@contextlib.contextmanager
def client_logs_silenced(name: str) -> Iterator[None]:
    """Silence client logger `name` while topo checks something whose failure it reports itself
    (a passive declaration of a missing exchange makes pika warn about the closed channel)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def route_client_logs(debug: bool = False, quiet: bool = False) -> None:
    """Client logs at WARNING (DEBUG when `debug`; nothing below CRITICAL when `quiet`, for
    one-shot commands whose own error line says what failed; pika's connection life cycle only
    when `debug`), repeats filtered on every handler of the root logger. Idempotent."""
    level = logging.DEBUG if debug else logging.CRITICAL if quiet else logging.WARNING
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # pika's connection life cycle (socket EOF, refused, workflow failed, with tracebacks) is what
    # topo reports itself in one line per change; channel-level warnings stay.
    logging.getLogger(PIKA_CONNECTION_LOGGER).setLevel(logging.DEBUG if debug else logging.CRITICAL)
    handlers = logging.getLogger().handlers or ([logging.lastResort] if logging.lastResort else [])
    for handler in handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
