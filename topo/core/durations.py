"""Durations as written in topology.yaml ("500ms", "1s", "5m", "1h30m", "7d", or plain seconds)."""

from __future__ import annotations

import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 500ms, 1s, 5m, 1h, 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip()
    if not DURATION.match(text):
        raise ValueError(f"{value!r} is not a duration: write e.g. 500ms, 1s, 5m, 1h30m or 7d")
    return sum(float(amount) * UNITS[unit] for amount, unit in PART.findall(text))


def format_duration(seconds: float) -> str:
    """Shortest exact label for a duration, for names and Prometheus `for:` ("1s", "1500ms", "5m")."""
    millis = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
