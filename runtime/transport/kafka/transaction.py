"""The exactly-once side of a Kafka group member: what its transactions carry, and committing them.

Retry and dead-letter copies and the events handlers derive from a delivery (`context.publish`)
are held per partition and input offset (`hold`) until the commit of an offset past their input,
and produced into that very transaction, right before `send_offsets_to_transaction`: a committed
offset and everything its inputs produced become visible together, and a transaction never
carries the output of an input whose offset it does not commit (inputs of one partition finish
out of order: other keys run concurrently).

A transaction refused with an abortable error (typically `ILLEGAL_GENERATION` or
`REBALANCE_IN_PROGRESS`: the group rebalanced while it was open) is aborted and done again: what
it carried is held again and the offsets are committed by the next attempt, once the member knows
its new generation. A fatal error (another process took over the transactional id), or refusals
that go on for `GIVE_UP_AFTER` attempts, stop the member: it was fenced.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from topo.runtime.transport.base import DeliveryReport, DerivedEvent, StreamId, TransportError

log = logging.getLogger("topo.runtime.kafka")

DeliveryHook = Callable[[KafkaError | None, Message], None]
GIVE_UP_AFTER = 50  # consecutive aborted attempts (one per commit interval) before the member stops
TIMEOUT = 30.0  # seconds for each transactional call


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a transaction will carry."""

    topic: str
    key: str | None
    body: bytes
    headers: Mapping[str, str] | None = None
    report: DeliveryHook | None = None


def derived_message(event: DerivedEvent) -> Outgoing:
    return Outgoing(event.topic.topic, event.key, event.body, event.headers, report_to(event))


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


Produce = Callable[[Outgoing], None]


class Transactions:
    """Held output and the commits of one exactly-once member (see the module docstring)."""

    def __init__(self, producer: Producer, consumer: Consumer, group: str, produce: Produce) -> None:
        self.producer = producer
        self.consumer = consumer
        self.group = group
        self.produce = produce
        self.held: dict[StreamId, dict[int, list[Outgoing]]] = {}
        self.carried: list[tuple[StreamId, int, list[Outgoing]]] = []  # held output in the open transaction
        self.refusals = 0  # consecutive aborted attempts
        self.aborted = False  # for good: nothing may be committed any more
        producer.init_transactions(TIMEOUT)
        producer.begin_transaction()

    def hold(self, stream: StreamId, offset: int, messages: list[Outgoing]) -> None:
        """Until the commit past `offset`. A redelivered input (handled again after a seek back)
        replaces what its first handling left."""
        self.held.setdefault(stream, {})[offset] = messages

    def forget(self, stream: StreamId) -> None:
        """The partition went to another member: its uncommitted inputs are handled there again."""
        self.held.pop(stream, None)

    def drop_from(self, stream: StreamId, offset: int) -> None:
        """Inputs from `offset` on are handled again (a seek back): their output comes again."""
        held = self.held.get(stream)
        if held:
            for later in [o for o in held if o >= offset]:
                del held[later]

    def commit(self, offsets: list[TopicPartition], begin_next: bool) -> bool:
        """Produce the output held for the inputs before `offsets`, send the offsets, commit.
        False when the transaction was aborted to be done again (its output is held again; the
        caller commits the offsets again later); TransportError when the member must stop."""
        try:
            for position in offsets:
                self._carry((position.topic, position.partition), position.offset)
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), TIMEOUT)
            self.producer.commit_transaction(TIMEOUT)
        except KafkaException as error:
            return self._refused(error, begin_next)
        self.carried.clear()
        self.refusals = 0
        if begin_next:
            self.producer.begin_transaction()
        return True

    def _carry(self, stream: StreamId, end: int) -> None:
        """Produce what is held for the inputs of `stream` before `end`, in input order."""
        held = self.held.get(stream)
        if not held:
            return
        for offset in sorted(o for o in held if o < end):
            messages = held.pop(offset)
            self.carried.append((stream, offset, messages))
            for message in messages:
                self.produce(message)

    def _refused(self, error: KafkaException, begin_next: bool) -> bool:
        kafka_error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(TIMEOUT)
        self.refusals += 1
        again = (kafka_error is not None and kafka_error.txn_requires_abort() and not kafka_error.fatal()
                 and self.refusals < GIVE_UP_AFTER)
        if not again:
            self.aborted = True
            raise TransportError(f"kafka: transaction of group {self.group} failed; this member was fenced "
                                 f"(another member or process took over): {error}") from None
        for stream, offset, messages in self.carried:
            self.held.setdefault(stream, {}).setdefault(offset, messages)
        self.carried.clear()
        log.info("kafka: transaction of group %s aborted, to be done again: %s", self.group, error)
        if begin_next:
            self.producer.begin_transaction()
        return False

    def abort_for_good(self) -> None:
        """The member lost its partitions: its open transaction must never commit."""
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(TIMEOUT)
        self.aborted = True
