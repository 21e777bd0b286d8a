"""Consumer lag of the topology's groups, read from the broker (never from the consumers).

Kafka (per group, topic, partition), for the group's `kafka.group_id`, every event topic of its
subscriptions and its retry topics:

* lag in events = high watermark - committed offset, as `kafka-consumer-groups.sh --describe`
  computes it. A partition without a committed offset counts from the log start (the runtime
  starts a new group at the earliest offset), where Kafka's tool prints "-".
* lag in seconds = now - timestamp of the oldest unconsumed record: the record at the committed
  offset is read (one throwaway consumer assigned to every lagging partition at once, never
  committing). Exact, not interpolated; 0 when the partition has no lag.
* dead letters pending = high watermark of the DLQ topic - offset committed by the replay group
  `<group_id>.dlq-replay` (`topo dlq replay`), or - log start when nothing was replayed.

RabbitMQ (per group work queue, from the management API, whose statistics refresh every ~5 s):

* lag in events = messages ready + unacknowledged; consumers as the broker reports them.
* lag in seconds: quorum queues on 3.10 have no `head_message_timestamp`, and peeking with
  `/get` is refused on single-active-consumer queues and would count as a delivery attempt
  (towards `x-delivery-limit`) on the others. Instead, as kafka-lag-exporter interpolates
  offsets, the reader keeps a history of each queue's publish counter: the head message is
  message number `published - messages + 1`, and the time the counter passed that number is
  when the head arrived. Older than the history: the history's age (a lower bound). A one-shot
  read has no history, so it reports seconds only for empty queues.
* dead letters pending = messages in the group's dead-letter queue.
"""

from __future__ import annotations

import bisect
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from topo.core.connect import kafka_config, rabbit_target
from topo.core.kafka_trouble import KafkaTrouble, metadata_within
from topo.core.model import BrokerKind, ConsumerGroup, Topology

KIND_EVENTS = "events"  # an event topic / a work queue
KIND_RETRY = "retry"  # a retry topic / a wait queue

DLQ_REPLAY_SUFFIX = ".dlq-replay"
HEAD_READ_TIMEOUT = 5.0  # seconds the Kafka head reads may take per poll in all


class LagError(RuntimeError):
    """The broker could not be read; the message names the broker and the fix. `refused`: the
    broker refused our credentials or TLS trust, which polling again does not cure."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class StreamLag:
    """One Kafka partition or one RabbitMQ queue of a group."""

    topic: str  # Kafka topic or RabbitMQ queue
    partition: int  # Kafka partition; RabbitMQ: index of the queue among the group's queues
    kind: str  # KIND_EVENTS or KIND_RETRY
    event_type: str  # "" for retry topics and RabbitMQ queues (they carry several event types)
    chain_id: str  # "" likewise
    position: int | None  # Kafka committed offset; RabbitMQ: messages consumed (published - messages)
    end: int  # Kafka high watermark; RabbitMQ: messages published into the queue
    lag: int
    lag_seconds: float | None  # None: unknown
    ready: int | None = None  # RabbitMQ only
    unacked: int | None = None
    consumers: int | None = None


@dataclass(frozen=True)
class GroupLag:
    group: str
    broker: str
    consumer_id: str  # Kafka group id, or the RabbitMQ vhost
    members: int  # Kafka group members; RabbitMQ: most consumers on one work queue
    state: str  # Kafka group state, "" for RabbitMQ
    streams: tuple[StreamLag, ...]
    dead_letters: int
    dead_letter_destination: str
    missing: tuple[str, ...] = ()  # declared topics/queues the broker does not have

    def event_streams(self) -> list[StreamLag]:
        return [s for s in self.streams if s.kind == KIND_EVENTS]

    @property
    def sum_lag(self) -> int:
        return sum(s.lag for s in self.event_streams())

    @property
    def max_lag(self) -> int:
        return max((s.lag for s in self.event_streams()), default=0)

    @property
    def max_lag_seconds(self) -> float | None:
        """Largest known lag in seconds; None when every lagging stream's age is unknown."""
        known = [s.lag_seconds for s in self.event_streams() if s.lag_seconds is not None]
        if known:
            return max(known)
        return None if any(s.lag for s in self.event_streams()) else 0.0


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    broker: str
    groups: tuple[GroupLag, ...]


def select_groups(topology: Topology, names: Sequence[str]) -> tuple[ConsumerGroup, ...]:
    if not names:
        return topology.groups
    return tuple(topology.group(name) for name in names)


# --------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class _Planned:
    topic: str
    kind: str
    event_type: str
    chain_id: str


def _kafka_plan(group: ConsumerGroup, topology: Topology) -> list[_Planned]:
    planned = []
    for subscription in group.subscriptions:
        for topic, chain in zip(subscription.topics, subscription.chains, strict=True):
            planned.append(_Planned(topic, KIND_EVENTS, subscription.event, str(chain)))
    planned.extend(_Planned(r.name, KIND_RETRY, "", "") for r in group.kafka.retry_topics)
    return planned


class KafkaLagReader:
    def __init__(self, topology: Topology, *, clock: Callable[[], float] = time.time,
                 timeout: float = 15.0) -> None:
        from confluent_kafka.admin import AdminClient

        from topo.runtime.transport.kafka.config import KAFKA_CLIENT_LOG

        self.topology = topology
        self.clock = clock
        self.timeout = timeout
        # SASL and KAFKA_SSL_* as for every Kafka client; librdkafka logs through Python logging
        self.config: dict[str, Any] = {**kafka_config(topology.kafka), "logger": KAFKA_CLIENT_LOG}
        self.admin = AdminClient(self.config)
        self._consumer: Any = None

    def _head_consumer(self) -> Any:
        from confluent_kafka import Consumer

        if self._consumer is None:
            self._consumer = Consumer({
                **self.config,
                "group.id": f"{self.topology.name}.lag-monitor",  # never joined nor committed: assign() only
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 50,
                "max.partition.fetch.bytes": 1024,
                "queued.max.messages.kbytes": 1024,
            })
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _fail(self, what: str, exc: BaseException) -> LagError:
        return LagError(f"Kafka at {self.config['bootstrap.servers']}: {what} failed ({exc}); check that the "
                        "broker is up (make brokers-status) and KAFKA_BOOTSTRAP_SERVERS points at it")

    def read(self, groups: Iterable[ConsumerGroup]) -> Snapshot:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        from topo.runtime.transport.kafka.config import KAFKA_CLIENT_LOG
        from topo.runtime.transport.kafka.probe import PROBE_TIMEOUT

        groups = tuple(groups)
        try:  # a bounded wait for an unreachable broker: `topo lag` answers within 15 s
            metadata = metadata_within(lambda seconds: self.admin.list_topics(timeout=seconds),
                                       lambda: self.admin.poll(0), KAFKA_CLIENT_LOG, self.topology.kafka,
                                       str(self.config["bootstrap.servers"]), min(self.timeout, PROBE_TIMEOUT))
        except KafkaTrouble as trouble:
            raise LagError(str(trouble), refused=trouble.refused) from None
        partitions = {name: sorted(meta.partitions) for name, meta in metadata.topics.items() if meta.error is None}
        plans = {g.name: _kafka_plan(g, self.topology) for g in groups}
        wanted = {p.topic for plan in plans.values() for p in plan} | {g.kafka.dlq_topic for g in groups}
        tps = [TopicPartition(t, p) for t in sorted(wanted) if t in partitions for p in partitions[t]]

        def offsets(spec: Any) -> dict[tuple[str, int], int]:
            if not tps:
                return {}
            futures = self.admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout)
            return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}

        group_ids = [g.kafka.group_id for g in groups]
        replay_ids = [g.kafka.group_id + DLQ_REPLAY_SUFFIX for g in groups]
        try:
            high = offsets(OffsetSpec.latest())  # type: ignore[no-untyped-call]
            low = offsets(OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            committed = {gid: self._committed(gid, ConsumerGroupTopicPartitions) for gid in group_ids + replay_ids}
            described = self.admin.describe_consumer_groups(group_ids, request_timeout=self.timeout)
            descriptions = {gid: _membership(f) for gid, f in described.items()}
        except LagError:
            raise
        except Exception as exc:
            raise self._fail("reading offsets and consumer groups", exc) from exc

        rows: dict[str, list[StreamLag]] = {}
        heads: dict[tuple[str, int], int] = {}
        for group in groups:
            done = committed[group.kafka.group_id]
            rows[group.name] = []
            for planned in plans[group.name]:
                for p in partitions.get(planned.topic, ()):
                    key = (planned.topic, p)
                    position = done.get(key)
                    lag = max(0, high[key] - (position if position is not None else low[key]))
                    if lag:
                        heads[key] = max(position if position is not None else low[key], low[key])
                    rows[group.name].append(StreamLag(planned.topic, p, planned.kind, planned.event_type,
                                                      planned.chain_id, position, high[key], lag, 0.0))
        ages = self._head_ages(heads, TopicPartition)

        result = []
        for group in groups:
            streams = tuple(s if s.lag == 0 else _with_seconds(s, ages.get((s.topic, s.partition)))
                            for s in rows[group.name])
            dlq = group.kafka.dlq_topic
            replayed = committed[group.kafka.group_id + DLQ_REPLAY_SUFFIX]
            # As `topo dlq list` shows them: from the replay group's offset, or the log start if later.
            pending = sum(max(0, high[(dlq, p)] - max(low[(dlq, p)], replayed.get((dlq, p), low[(dlq, p)])))
                          for p in partitions.get(dlq, ()))
            members, state = descriptions[group.kafka.group_id]
            missing = tuple(sorted({p.topic for p in plans[group.name] if p.topic not in partitions}
                                   | ({dlq} if dlq not in partitions else set())))
            result.append(GroupLag(group.name, BrokerKind.KAFKA.value, group.kafka.group_id, members, state, streams,
                                   pending, dlq, missing))
        return Snapshot(self.clock(), BrokerKind.KAFKA.value, tuple(result))

    def _committed(self, group_id: str, request_type: Any) -> dict[tuple[str, int], int]:
        futures = self.admin.list_consumer_group_offsets([request_type(group_id)], request_timeout=self.timeout)
        answer = futures[group_id].result()
        return {(tp.topic, tp.partition): int(tp.offset) for tp in answer.topic_partitions or () if tp.offset >= 0}

    def _head_ages(self, heads: dict[tuple[str, int], int], tp_type: Any) -> dict[tuple[str, int], float]:
        """Age of the record at each given offset: one assignment, records read until each answered."""
        from confluent_kafka import KafkaError

        if not heads:
            return {}
        consumer = self._head_consumer()
        pending = dict(heads)
        ages: dict[tuple[str, int], float] = {}
        consumer.assign([tp_type(t, p, offset) for (t, p), offset in sorted(pending.items())])
        deadline = time.monotonic() + HEAD_READ_TIMEOUT
        try:
            while pending and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=1000, timeout=0.2):
                    key = (message.topic(), message.partition())
                    if key not in pending:
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            # Only transaction markers left between the committed offset and the end.
                            ages[key] = 0.0
                            del pending[key]
                        continue
                    if message.offset() < pending[key]:
                        continue
                    kind, millis = message.timestamp()
                    if kind != 0 and millis > 0:  # 0: TIMESTAMP_NOT_AVAILABLE
                        ages[key] = max(0.0, self.clock() - millis / 1000.0)
                    del pending[key]
        finally:
            consumer.unassign()
        return ages


def _membership(future: Any) -> tuple[int, str]:
    """(members, state) of a described group; a group the broker does not know has none."""
    from confluent_kafka import KafkaException

    try:
        description = future.result()
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" in str(exc).upper():
            return 0, "dead"
        raise
    return len(description.members), getattr(description.state, "name", str(description.state)).lower()


def _with_seconds(stream: StreamLag, seconds: float | None) -> StreamLag:
    return StreamLag(stream.topic, stream.partition, stream.kind, stream.event_type, stream.chain_id,
                     stream.position, stream.end, stream.lag, seconds, stream.ready, stream.unacked,
                     stream.consumers)


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class _PublishHistory:
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, published), ascending

    def add(self, at: float, published: int, keep_seconds: float) -> None:
        if self.samples and published < self.samples[-1][1]:
            self.samples.clear()  # the counter restarted (node restart or queue re-created)
        self.samples.append((at, published))
        while len(self.samples) > 2 and self.samples[1][0] < at - keep_seconds:
            self.samples.popleft()

    def arrival(self, number: int) -> tuple[float, bool]:
        """When the counter reached `number`, interpolated; (oldest sample time, False) when earlier."""
        counts = [count for _, count in self.samples]
        index = bisect.bisect_left(counts, number)
        if index == 0:
            return self.samples[0][0], False
        if index >= len(counts):
            return self.samples[-1][0], True
        (t0, c0), (t1, c1) = self.samples[index - 1], self.samples[index]
        return t0 + (t1 - t0) * (number - c0) / (c1 - c0), True


QUEUE_COLUMNS = "name,type,messages,messages_ready,messages_unacknowledged,consumers,message_stats.publish"


class RabbitLagReader:
    def __init__(self, topology: Topology, *, clock: Callable[[], float] = time.time, timeout: float = 15.0,
                 history_seconds: float | None = None) -> None:
        self.topology = topology
        self.clock = clock
        self.timeout = timeout
        self.endpoint = rabbit_target(topology)  # the management API and vhost `topo apply` uses
        self.session = requests.Session()
        self.session.auth = (self.endpoint.user, self.endpoint.password)
        self.session.verify = self.endpoint.verify  # https with a private CA
        longest = max((max(g.alerts.lag_seconds, g.alerts.stalled_for_seconds) for g in topology.groups),
                      default=300.0)
        self.history_seconds = history_seconds if history_seconds is not None else 2 * longest + 60
        self._history: dict[str, _PublishHistory] = {}

    def close(self) -> None:
        self.session.close()

    def _queues(self) -> dict[str, dict[str, Any]]:
        vhost = urllib.parse.quote(self.endpoint.vhost, safe="")
        url = f"{self.endpoint.url}/api/queues/{vhost}"
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override session.verify
            response = self.session.get(url, params={"columns": QUEUE_COLUMNS}, timeout=self.timeout,
                                        verify=self.endpoint.verify)
            response.raise_for_status()
        except requests.RequestException as exc:
            reason = _reason(exc)
            where = f"rabbitmq: cannot read queues from the management API at {self.endpoint.url}"
            if reason == "certificate verify failed":
                raise LagError(f"{where}: its certificate is not trusted ({reason}); set RABBITMQ_MANAGEMENT_CACERT "
                               "to the CA file that signed it", refused=True) from None
            if reason in ("HTTP 401 Unauthorized", "HTTP 403 Forbidden"):
                raise LagError(f"{where}: user {self.endpoint.user!r} was refused ({reason}); fix the credentials "
                               "in RABBITMQ_MANAGEMENT_URL, RABBITMQ_MANAGEMENT_USER / RABBITMQ_MANAGEMENT_PASSWORD "
                               "or RABBITMQ_URL, and the user's vhost permissions", refused=True) from None
            raise LagError(f"{where} (RABBITMQ_MANAGEMENT_URL, broker.rabbitmq.management_url): {reason}; start the "
                           "node with the management plugin or point RABBITMQ_MANAGEMENT_URL at it, with a user "
                           "allowed to read the vhost") from None
        return {str(q["name"]): q for q in response.json()}

    def read(self, groups: Iterable[ConsumerGroup]) -> Snapshot:
        groups = tuple(groups)
        queues = self._queues()
        now = self.clock()
        result = []
        for group in groups:
            plumbing = group.rabbitmq
            streams: list[StreamLag] = []
            missing: list[str] = []
            named = [(q, i, KIND_EVENTS) for i, q in enumerate(plumbing.queues)]
            named += [(r.name, i, KIND_RETRY) for i, r in enumerate(plumbing.retry_queues)]
            for name, index, kind in named:
                info = queues.get(name)
                if info is None:
                    missing.append(name)
                    continue
                streams.append(self._stream(name, index, kind, info, now))
            dlq = queues.get(plumbing.dlq_queue)
            if dlq is None:
                missing.append(plumbing.dlq_queue)
            members = max((s.consumers or 0 for s in streams if s.kind == KIND_EVENTS), default=0)
            result.append(GroupLag(group.name, BrokerKind.RABBITMQ.value, self.endpoint.vhost, members, "",
                                   tuple(streams), int((dlq or {}).get("messages") or 0), plumbing.dlq_queue,
                                   tuple(sorted(missing))))
        return Snapshot(now, BrokerKind.RABBITMQ.value, tuple(result))

    def _stream(self, name: str, index: int, kind: str, info: dict[str, Any], now: float) -> StreamLag:
        messages = int(info.get("messages") or 0)
        published = int((info.get("message_stats") or {}).get("publish") or 0)
        history = self._history.setdefault(name, _PublishHistory())
        history.add(now, published, self.history_seconds)
        seconds: float | None
        if messages == 0:
            seconds = 0.0
        elif len(history.samples) < 2:
            seconds = None
        else:
            arrived, _exact = history.arrival(published - messages + 1)
            seconds = max(0.0, now - arrived)
        return StreamLag(name, index, kind, "", "", max(0, published - messages), published, messages, seconds,
                         int(info.get("messages_ready") or 0), int(info.get("messages_unacknowledged") or 0),
                         int(info.get("consumers") or 0))


def _reason(error: requests.RequestException) -> str:
    """The short cause of a failed request ("Connection refused", "401 Client Error: Unauthorized")."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.Timeout):
        return "no answer in time"
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "No route to host", "certificate verify failed"):
        if known in text:
            return known
    return type(error).__name__


LagReader = KafkaLagReader | RabbitLagReader


def open_reader(topology: Topology, broker: BrokerKind | None = None) -> LagReader:
    kind = broker or topology.broker
    return KafkaLagReader(topology) if kind is BrokerKind.KAFKA else RabbitLagReader(topology)
