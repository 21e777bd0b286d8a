"""The resolved topology: the single model every emitter and the runtime read.

It is produced by `topo.generator.resolve` from a validated topology.yaml, with every default
applied and every derived name (topics, routing keys, retry and dead-letter plumbing) computed
once. It is serialised as `generated/topology.json`, so the runtime can run from the compiled
topology without the YAML or the generator.

Connection settings keep their `${VAR:-default}` references verbatim: they are resolved from the
environment only when a client connects (`topo.core.interpolate.expand`), so no secret and
no machine-specific value is ever written into `generated/`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

MODEL_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ADDRESS = "address"  # 0x + 40 hex digits
    HASH32 = "hash32"  # 0x + 64 hex digits
    HEX = "hex"  # 0x + an even number of hex digits (call data, signatures)
    UINT256 = "uint256"  # unsigned 256-bit integer as a decimal string
    DATETIME = "datetime"  # RFC 3339, UTC
    ENUM = "enum"
    ARRAY = "array"


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Reader(StrEnum):
    """How consumers decode an event's payload (`reader:` in topology.yaml)."""

    TOLERANT = "tolerant"  # unknown payload fields are accepted and kept in `payload.model_extra`
    STRICT = "strict"  # unknown payload fields make the event poison (dead-lettered)


class Compatibility(StrEnum):
    """Which payload changes `topo validate --against REF` accepts for an event (docs/compatibility.md)."""

    BACKWARD = "backward"  # new readers read what old writers wrote
    FORWARD = "forward"  # old readers read what new writers write
    FULL = "full"  # both
    NONE = "none"  # not checked


class EnvelopeFormat(StrEnum):
    """How publishers write an event (`envelope:` in topology.yaml); consumers read both."""

    TOPO = "topo"  # the standard JSON envelope (event_type, event_id, timestamp, chain_id, payload, metadata)
    CLOUDEVENTS = "cloudevents"  # CloudEvents 1.0 binary content mode: attributes in headers, the payload as data


class BrokerKind(StrEnum):
    KAFKA = "kafka"
    RABBITMQ = "rabbitmq"


class PayloadField(Frozen):
    name: str
    type: FieldType
    required: bool = True
    description: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    values: tuple[str, ...] = ()  # enum members
    items: FieldType | None = None  # element type of an array
    item_values: tuple[str, ...] = ()  # enum members of an array of enums


class RetryPolicy(Frozen):
    max_retries: int
    backoff: Literal["exponential", "fixed"]
    initial_seconds: float
    multiplier: float
    max_seconds: float
    # The delay before retry n (1-based) is delays_seconds[n-1]; len == max_retries.
    delays_seconds: tuple[float, ...]


class AlertThresholds(Frozen):
    lag_events: int
    lag_seconds: float
    lag_for_seconds: float
    dead_letter_events: int  # alert when more than this many events were dead-lettered
    error_rate_ratio: float
    error_rate_for_seconds: float
    stalled_for_seconds: float  # lag present and no progress for this long: consumer stalled


class Chain(Frozen):
    id: int
    name: str


class EventTopic(Frozen):
    """One event type on one chain: its Kafka topic and its RabbitMQ routing key."""

    event: str
    chain_id: int
    chain_name: str
    topic: str
    routing_key: str


class KafkaTopicSettings(Frozen):
    partitions: int
    replication_factor: int
    configs: dict[str, str]  # topic-level configs, e.g. retention.ms, cleanup.policy (sorted keys)


class EventType(Frozen):
    name: str  # e.g. "block.new"
    class_name: str  # e.g. "BlockNew" (payload class; the envelope is "BlockNewEvent")
    description: str
    version: str  # payload schema version, written to metadata.version
    producers: tuple[str, ...]
    key: str  # payload field whose value is the partition / ordering key
    ordered: bool  # events with the same key are handled one at a time, in log order
    payload: tuple[PayloadField, ...]
    kafka: KafkaTopicSettings
    topics: tuple[EventTopic, ...]  # one per chain, in chain order
    consumers: tuple[str, ...]  # consumer groups subscribed to it
    # Defaults keep a topology.json written before these fields existed readable.
    reader: Reader = Reader.TOLERANT
    compatibility: Compatibility = Compatibility.BACKWARD
    envelope: EnvelopeFormat = EnvelopeFormat.TOPO


class Subscription(Frozen):
    event: str
    chains: tuple[int, ...]
    handler: str | None  # "module:function"; None means the group's handler
    ordered: bool
    topics: tuple[str, ...]  # Kafka topics, one per chain
    routing_keys: tuple[str, ...]  # RabbitMQ routing keys, one per chain


class RetryDestination(Frozen):
    delay_seconds: float
    name: str  # Kafka retry topic or RabbitMQ wait queue


class KafkaGroupPlumbing(Frozen):
    group_id: str
    # Non-blocking retries of unordered events go through one topic per delay; ordered events
    # are retried in place, so a group with only ordered subscriptions has none.
    retry_topics: tuple[RetryDestination, ...]
    dlq_topic: str
    transactional_id_prefix: str | None  # set for exactly-once groups
    # Topic settings of every retry topic and of the dead-letter topic (derived from the subscribed
    # events: most partitions, highest replication factor; cleanup.policy=delete; see resolve.py).
    # None only in a topology.json written before these fields existed.
    retry_topic_settings: KafkaTopicSettings | None = None
    dlq_topic_settings: KafkaTopicSettings | None = None


class RabbitGroupPlumbing(Frozen):
    exchange: str  # the group's own exchange, bound to the topology exchange
    exchange_type: Literal["x-consistent-hash", "fanout"]
    hash_header: str | None  # header the consistent-hash exchange hashes on
    queues: tuple[str, ...]  # work queues (quorum); one per partition
    single_active_consumer: bool  # true where order is required
    delivery_limit: int  # quorum x-delivery-limit: a safety net against crash loops
    retry_queues: tuple[RetryDestination, ...]  # TTL wait queues dead-lettering back to `exchange`
    dlq_queue: str


class DedupSettings(Frozen):
    store: Literal["memory", "sqlite", "postgres"]
    capacity: int  # memory store: most recent event ids kept; sqlite and postgres: ids retained
    path: str | None  # sqlite store: database file (may hold ${VAR} references)
    dsn: str | None  # postgres store: connection URL (a credential; holds ${VAR} references)
    table: str  # postgres store: the table of processed ids (an SQL identifier)


class ConsumerGroup(Frozen):
    name: str
    description: str
    delivery: Delivery
    handler: str | None  # "module:function" used for subscriptions that name none
    subscriptions: tuple[Subscription, ...]
    # Event types its handlers may publish (`context.publish`), as listed in the topology.
    publishes: tuple[str, ...] = ()
    retry: RetryPolicy
    max_in_flight: int  # backpressure bound: events fetched but not yet done, per process
    dedup: DedupSettings
    alerts: AlertThresholds
    ordered: bool  # any subscription ordered
    kafka: KafkaGroupPlumbing
    rabbitmq: RabbitGroupPlumbing


class KafkaSettings(Frozen):
    # Values may contain ${VAR} / ${VAR:-default}; expand them at connect time.
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    partitions: int
    replication_factor: int


class RabbitSettings(Frozen):
    # Values may contain ${VAR} / ${VAR:-default}; expand them at connect time.
    url: str
    management_url: str
    exchange: str  # the topology's durable topic exchange
    partitions: int  # default number of work queues per group
    key_header: str  # header carrying the ordering key on every published message


class SourceFile(Frozen):
    """The topology.yaml a topology was compiled from, so a command given the compiled
    topology.json can tell that the YAML changed since `topo generate` ran."""

    file: str  # the file's name only (never a machine's path); looked up beside the output folder
    sha256: str  # of the file's bytes


class DeploySettings(Frozen):
    """Where the generated Kubernetes workloads run (`deploy:` in topology.yaml)."""

    image: str  # the image holding topo, the compiled generated/ folder and the handler modules
    namespace: str | None  # None: the namespace kubectl applies to


class Topology(Frozen):
    model_version: int = MODEL_VERSION
    version: int
    name: str
    description: str
    broker: BrokerKind  # the broker `topo run` uses unless told otherwise
    kafka: KafkaSettings
    rabbitmq: RabbitSettings
    chains: tuple[Chain, ...]
    events: tuple[EventType, ...]
    groups: tuple[ConsumerGroup, ...]
    alerts: AlertThresholds  # topology-wide defaults; each group carries its merged copy
    producers: tuple[str, ...]
    # Python module of the generated event classes (generated/python/<events_module>.py).
    events_module: str
    # None only in a topology.json written before this field existed.
    deploy: DeploySettings | None = None
    # None when compiled from a document in memory rather than from a file.
    source: SourceFile | None = None

    def event(self, name: str) -> EventType:
        for event in self.events:
            if event.name == name:
                return event
        raise KeyError(f"unknown event type {name!r}; declared: {', '.join(e.name for e in self.events)}")

    def group(self, name: str) -> ConsumerGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"unknown consumer group {name!r}; declared: {', '.join(g.name for g in self.groups)}")

    def chain(self, chain_id: int) -> Chain:
        for chain in self.chains:
            if chain.id == chain_id:
                return chain
        raise KeyError(f"unknown chain {chain_id}; declared: {', '.join(str(c.id) for c in self.chains)}")

    def event_topic(self, event: str, chain_id: int) -> EventTopic:
        for topic in self.event(event).topics:
            if topic.chain_id == chain_id:
                return topic
        raise KeyError(f"event {event!r} is not declared on chain {chain_id}")
