"""Events a handler publishes while it handles an event (`context.publish`): derived events.

A consumer group declares what it may publish (`consumer_groups.<g>.publishes`). During one
handler call, `context.publish` validates and wraps each event at once (the same arguments and
errors as `Publisher.publish`, `metadata.producer` the group's name) and collects it in that
call's `Outbox`; nothing is sent yet. If the handler raises, the outbox is dropped with the
attempt. If it returns, the outbox travels with the event's success to the runner, whose settle
step sends it with the acknowledgement of the input (`ConsumerTransport.publish_and_ack`): inside
the Kafka transaction that commits the input's offset in an exactly-once group, and otherwise
confirmed before the input is acknowledged.

Unless the handler passes `event_id`, a derived event's id is `derived_event_id(input id, group,
index of the call)`: a redelivered input, handled again, publishes the same ids, so downstream
dedup drops the copies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from topo.core.model import ConsumerGroup, Topology
from topo.runtime.events import EventClasses
from topo.runtime.publisher import Envelopes, Published, PublishError
from topo.runtime.transport.base import DeliveryCallback, DerivedEvent


def derived_event_id(source: UUID, group: str, index: int) -> UUID:
    """The id of the `index`-th event (from 0) group `group` publishes while handling event `source`.
    The group is part of it: two groups deriving from one input publish distinct events."""
    return uuid.uuid5(source, f"{group}/{index}")


class DerivedEvents:
    """What a group may publish from its handlers, and how its envelopes are built (one per group)."""

    def __init__(self, topology: Topology, classes: EventClasses, group: ConsumerGroup) -> None:
        self.group = group.name
        self.allowed = frozenset(group.publishes)
        self.envelopes = Envelopes(topology, classes, producer=group.name)

    def outbox(self, source: UUID, trace: Mapping[str, str] | None = None) -> Outbox:
        return Outbox(self, source, trace)


class Outbox:
    """The events one handler call published, in call order (see the module docstring)."""

    __slots__ = ("derived", "events", "source", "trace")

    def __init__(self, derived: DerivedEvents, source: UUID, trace: Mapping[str, str] | None = None) -> None:
        self.derived = derived
        self.source = source  # the input event's id
        self.trace = trace  # the input's W3C trace headers: derived events continue its trace
        self.events: list[DerivedEvent] = []

    def publish(self, payload: BaseModel | Mapping[str, Any], chain_id: int | None = None, *,
                event_type: str | None = None, event_id: UUID | None = None,
                on_delivery: DeliveryCallback | None = None, headers: Mapping[str, str] | None = None
                ) -> Published:
        derived = self.derived
        identity = event_id or derived_event_id(self.source, derived.group, len(self.events))
        published, body = derived.envelopes.build(payload, chain_id, event_type=event_type, event_id=identity)
        if published.event_type not in derived.allowed:
            declared = ", ".join(sorted(derived.allowed)) or "none"
            raise PublishError(f"consumer group {derived.group!r} may not publish {published.event_type!r} "
                               f"(it publishes: {declared}); add it to `consumer_groups.{derived.group}.publishes` "
                               "in topology.yaml")
        self.events.append(DerivedEvent(published.topic, published.key, body,
                                        self.trace if headers is None else headers, on_delivery))
        return published
