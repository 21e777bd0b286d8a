"""Kafka: read the live topics through the AdminClient, and apply a plan's Kafka changes.

Reads are batched (one metadata request, describe_configs in chunks) and so are writes
(create_topics, create_partitions, incremental_alter_configs and delete_topics take every topic
of a plan at once), so a topology with thousands of topics plans and applies in seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

# confluent_kafka.admin re-exports these without `__all__`, which strict mypy reads as private.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from topo.core.client_logs import KafkaClientLog
from topo.core.desired import TopicSpec
from topo.core.kafka_trouble import KafkaTrouble, metadata_within
from topo.core.model import KafkaSettings
from topo.provision.plan import Action, Broker, Change

DESCRIBE_BATCH = 100  # smaller requests pipeline better than one huge one
WRITE_BATCH = 1000
REQUEST_TIMEOUT = 60.0
METADATA_TIMEOUT = 6.0  # how long an unreachable broker makes `topo plan` wait before saying so
VISIBLE_TIMEOUT = 60.0


QUIET = logging.getLogger("topo.provision.kafka.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


class KafkaProvisionError(RuntimeError):
    pass


@dataclass(frozen=True)
class LiveTopic:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]  # effective value of every config the broker reports
    dynamic: frozenset[str]  # configs set on the topic itself (not broker defaults)


def _result(future: Future[Any], what: str, timeout: float = REQUEST_TIMEOUT) -> Any:
    try:
        return future.result(timeout=timeout)
    except KafkaException as exc:
        raise KafkaProvisionError(f"{what}: {exc.args[0] if exc.args else exc}") from exc


def _set_on_topic(source: Any) -> bool:
    # The client types ConfigEntry.source as ConfigSource but hands out its int value.
    value = source.value if isinstance(source, ConfigSource) else source
    return bool(value == ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class KafkaBroker:
    def __init__(self, config: Mapping[str, str], settings: KafkaSettings) -> None:
        self.bootstrap = config["bootstrap.servers"]
        self.settings = settings  # for the names of the variables an error tells to fix
        # librdkafka's own connection log would repeat on stderr what our errors already say;
        # its latest connection failure is kept for them.
        self.client_log = KafkaClientLog(QUIET)
        client: dict[str, Any] = {**config, "logger": self.client_log}
        self.admin = AdminClient(client)

    # ------------------------------------------------------------------ read

    def partitions(self, timeout: float = METADATA_TIMEOUT) -> dict[str, tuple[int, int]]:
        """name -> (partitions, replication factor) of every topic, from one metadata request."""
        try:
            metadata = metadata_within(lambda seconds: self.admin.list_topics(timeout=seconds),
                                       lambda: self.admin.poll(0), self.client_log, self.settings, self.bootstrap,
                                       timeout)
        except KafkaTrouble as trouble:
            raise KafkaProvisionError(str(trouble)) from None
        found: dict[str, tuple[int, int]] = {}
        for name, topic in metadata.topics.items():
            if topic.error is not None and topic.error.code() != KafkaError.LEADER_NOT_AVAILABLE:
                continue
            replicas = max((len(p.replicas) for p in topic.partitions.values()), default=0)
            found[name] = (len(topic.partitions), replicas)
        return found

    def read(self, in_scope: Callable[[str], bool]) -> dict[str, LiveTopic]:
        shape = {name: value for name, value in self.partitions().items() if in_scope(name)}
        names = sorted(shape)
        live: dict[str, LiveTopic] = {}
        # Every batch is in flight at once; the broker answers them in parallel.
        futures: dict[Any, Future[Any]] = {}
        for chunk in _chunks(names, DESCRIBE_BATCH):
            futures.update(self.admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in chunk],
                                                       request_timeout=REQUEST_TIMEOUT))
        for resource, future in futures.items():
            try:
                entries: dict[str, ConfigEntry] = future.result(timeout=REQUEST_TIMEOUT)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # deleted between the metadata and the describe
                raise KafkaProvisionError(f"describe configs of topic {resource.name}: {exc.args[0]}") from exc
            partitions, replicas = shape[resource.name]
            live[resource.name] = LiveTopic(
                name=resource.name,
                partitions=partitions,
                replication_factor=replicas,
                configs={key: entry.value for key, entry in entries.items() if entry.value is not None},
                dynamic=frozenset(key for key, entry in entries.items() if _set_on_topic(entry.source)),
            )
        return live

    # ------------------------------------------------------------------ apply

    def apply(self, changes: Sequence[Change], report: Callable[[str], None]) -> None:
        mine = [c for c in changes if c.broker is Broker.KAFKA]
        creates = [c.subject for c in mine if c.action is Action.CREATE and c.kind == "topic"]
        grow = {c.name: c.subject.partitions for c in mine
                if c.action is Action.UPDATE and c.kind == "topic" and any(d.field == "partitions"
                                                                           for d in c.differences)}
        set_configs = {c.name: {d.field.removeprefix("config."): str(d.desired) for d in c.differences
                                if d.field.startswith("config.")}
                       for c in mine if c.action is Action.UPDATE and c.kind == "topic"}
        unset_configs = {c.name: [d.field.removeprefix("config.") for d in c.differences]
                         for c in mine if c.action is Action.DELETE and c.kind == "topic-config"}
        deletes = [c.name for c in mine if c.action is Action.DELETE and c.kind == "topic"]

        if creates:
            self._create(creates, report)
        if grow:
            self._grow(grow, report)
        alterations = {name: [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                              for k, v in sorted(configs.items())]
                       for name, configs in set_configs.items() if configs}
        for name, keys in unset_configs.items():
            alterations.setdefault(name, []).extend(
                ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in keys)
        if alterations:
            self._alter(alterations, report)
        if deletes:
            self._delete(deletes, report)
        expected = {t.name: t.partitions for t in creates} | grow
        if expected or deletes:
            self._wait_visible(expected, set(deletes))
        if alterations:
            self._wait_configs({name: configs for name, configs in set_configs.items() if configs}, unset_configs)

    def _create(self, topics: Sequence[TopicSpec], report: Callable[[str], None]) -> None:
        errors: list[str] = []
        for chunk in _chunks(list(topics), WRITE_BATCH):
            new = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor,
                            config=dict(t.configs)) for t in chunk]
            for name, future in self.admin.create_topics(new, operation_timeout=REQUEST_TIMEOUT,
                                                         request_timeout=REQUEST_TIMEOUT).items():
                try:
                    future.result(timeout=REQUEST_TIMEOUT)
                    report(f"created topic {name}")
                except KafkaException as exc:
                    if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        report(f"topic {name} already exists (created concurrently)")
                        continue
                    errors.append(f"create topic {name}: {exc.args[0] if exc.args else exc}")
        self._raise(errors)

    def _grow(self, totals: Mapping[str, int], report: Callable[[str], None]) -> None:
        errors: list[str] = []
        requests = [NewPartitions(name, total) for name, total in sorted(totals.items())]
        for name, future in self.admin.create_partitions(requests, operation_timeout=REQUEST_TIMEOUT,
                                                         request_timeout=REQUEST_TIMEOUT).items():
            try:
                future.result(timeout=REQUEST_TIMEOUT)
                report(f"raised partitions of topic {name} to {totals[name]}")
            except KafkaException as exc:
                errors.append(f"add partitions to topic {name}: {exc.args[0] if exc.args else exc}")
        self._raise(errors)

    def _alter(self, alterations: Mapping[str, list[ConfigEntry]], report: Callable[[str], None]) -> None:
        errors: list[str] = []
        resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
                     for name, entries in sorted(alterations.items())]
        for chunk in _chunks(resources, DESCRIBE_BATCH):
            for resource, future in self.admin.incremental_alter_configs(
                    list(chunk), request_timeout=REQUEST_TIMEOUT).items():
                try:
                    future.result(timeout=REQUEST_TIMEOUT)
                    report(f"updated configs of topic {resource.name}")
                except KafkaException as exc:
                    errors.append(f"alter configs of topic {resource.name}: {exc.args[0] if exc.args else exc}")
        self._raise(errors)

    def _delete(self, names: Sequence[str], report: Callable[[str], None]) -> None:
        errors: list[str] = []
        for chunk in _chunks(sorted(names), WRITE_BATCH):
            for name, future in self.admin.delete_topics(list(chunk), operation_timeout=REQUEST_TIMEOUT,
                                                         request_timeout=REQUEST_TIMEOUT).items():
                try:
                    future.result(timeout=REQUEST_TIMEOUT)
                    report(f"deleted topic {name}")
                except KafkaException as exc:
                    if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        continue
                    errors.append(f"delete topic {name}: {exc.args[0] if exc.args else exc}")
        self._raise(errors)

    def _wait_visible(self, expected: Mapping[str, int], deleted: set[str]) -> None:
        """Metadata catches up with the controller shortly after; wait so a following plan is exact."""
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while True:
            current = self.partitions()
            pending = [name for name, count in expected.items() if current.get(name, (0, 0))[0] < count]
            pending += [name for name in deleted if name in current]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KafkaProvisionError(f"the broker accepted the changes but after {VISIBLE_TIMEOUT:.0f}s its "
                                          f"metadata still lags for {len(pending)} topic(s), e.g. {pending[0]}; "
                                          "run `topo plan` again in a moment")
            time.sleep(0.2)

    def _wait_configs(self, wanted: Mapping[str, Mapping[str, str]], unset: Mapping[str, list[str]]) -> None:
        """Brokers apply config changes from the metadata log shortly after the controller accepts them."""
        names = set(wanted) | set(unset)
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while True:
            live = self.read(lambda name: name in names)
            pending = [name for name, configs in wanted.items()
                       if any(live.get(name) is None or live[name].configs.get(k) != v for k, v in configs.items())]
            pending += [name for name, keys in unset.items()
                        if name in live and any(k in live[name].dynamic for k in keys)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KafkaProvisionError(f"the broker accepted the config changes but after {VISIBLE_TIMEOUT:.0f}s "
                                          f"still reports old values for {len(pending)} topic(s), e.g. {pending[0]}; "
                                          "run `topo plan` again in a moment")
            time.sleep(0.2)

    @staticmethod
    def _raise(errors: list[str]) -> None:
        if errors:
            shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
            raise KafkaProvisionError(shown)
