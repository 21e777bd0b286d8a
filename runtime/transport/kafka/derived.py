"""Events handlers derive from a delivery (`context.publish`), on Kafka.

Exactly-once groups hold them per partition and input offset until the offset commit that covers
their input, and produce them into that very transaction (`HeldEvents`): a committed offset and
the events derived from the inputs before it become visible together, and nothing derived from an
input whose offset a transaction does not commit is ever part of it (inputs on one partition may
finish out of order: other keys run concurrently). At-least-once groups produce them at once and
ack the input once all are confirmed (`KafkaConsumer.publish_and_ack`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message

from topo.runtime.transport.base import DeliveryReport, DerivedEvent, StreamId

DeliveryHook = Callable[[KafkaError | None, Message], None]

# A transaction refused because another member took over: a zombie's commit.
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID,
                    KafkaError.REBALANCE_IN_PROGRESS})


class HeldEvents:
    """Derived events of an exactly-once consumer, by partition and input offset, not yet produced."""

    def __init__(self) -> None:
        self.by_stream: dict[StreamId, dict[int, Sequence[DerivedEvent]]] = {}

    def hold(self, stream: StreamId, offset: int, events: Sequence[DerivedEvent]) -> None:
        """A redelivered input (handled again after a seek back) replaces what its first handling left."""
        self.by_stream.setdefault(stream, {})[offset] = events

    def forget(self, stream: StreamId) -> None:
        """The partition went to another member: its uncommitted inputs are handled there again."""
        self.by_stream.pop(stream, None)

    def drop_from(self, stream: StreamId, offset: int) -> None:
        """Inputs from `offset` on are handled again (a seek back): their events come again."""
        held = self.by_stream.get(stream)
        if held:
            for later in [o for o in held if o >= offset]:
                del held[later]

    def take(self, stream: StreamId, end: int) -> list[DerivedEvent]:
        """The events derived from the inputs before `end`, in input order, no longer held."""
        held = self.by_stream.get(stream)
        if not held:
            return []
        taken: list[DerivedEvent] = []
        for offset in sorted(o for o in held if o < end):
            taken += held.pop(offset)
        return taken


def report_to(event: DerivedEvent) -> DeliveryHook | None:
    """The librdkafka delivery callback that tells `event.on_delivery`, if any."""
    callback = event.on_delivery
    if callback is None:
        return None

    def report(error: KafkaError | None, message: Message) -> None:
        if error is None:
            callback(DeliveryReport(event.topic.topic, event.key, None, message.partition(), message.offset()))
        else:
            callback(DeliveryReport(event.topic.topic, event.key, error.str()))

    return report
