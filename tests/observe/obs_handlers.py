"""Handlers the observability tests name in their topologies (`obs_handlers:handle`)."""

from __future__ import annotations

from typing import Any


class PoisonEvent(ValueError):
    """Raised for events whose payload says note="poison": with max_retries 0 they are dead-lettered."""


def handle(event: Any) -> None:
    if getattr(event.payload, "note", None) == "poison":
        raise PoisonEvent(f"poison event {event.event_id} (test)")
