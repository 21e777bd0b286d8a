"""Plan and apply for a set of brokers: reads live state, diffs, applies. Used by the CLI and bench."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from topo.core.connect import kafka_config, rabbit_target
from topo.core.desired import DesiredState, desired_state, topic_ownership
from topo.core.model import Topology
from topo.provision.diff import diff_kafka, diff_rabbitmq
from topo.provision.kafka import KafkaBroker
from topo.provision.plan import Broker, Change, Plan
from topo.provision.rabbitmq import RabbitBroker


@dataclass
class Provisioner:
    topology: Topology
    brokers: tuple[Broker, ...]
    env: Mapping[str, str] | None = None
    desired: DesiredState = field(init=False)
    _kafka: KafkaBroker | None = field(default=None, init=False)
    _rabbit: RabbitBroker | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.desired = desired_state(self.topology)

    @property
    def kafka(self) -> KafkaBroker:
        if self._kafka is None:
            self._kafka = KafkaBroker(kafka_config(self.topology.kafka, self.env), self.topology.kafka)
        return self._kafka

    @property
    def rabbit(self) -> RabbitBroker:
        if self._rabbit is None:
            self._rabbit = RabbitBroker(rabbit_target(self.topology, self.env))
        return self._rabbit

    def plan(self, prune: bool = False) -> Plan:
        changes: list[Change] = []
        targets: dict[str, dict[str, str]] = {}
        if Broker.KAFKA in self.brokers:
            ownership = topic_ownership(self.topology)
            live = self.kafka.read(ownership.in_scope)
            changes += diff_kafka(self.desired.topics, live, ownership, prune)
            targets[Broker.KAFKA.value] = {"bootstrap_servers": self.kafka.bootstrap}
        if Broker.RABBITMQ in self.brokers:
            changes += diff_rabbitmq(self.topology, self.desired, self.rabbit.read(), prune)
            targets[Broker.RABBITMQ.value] = {"management_url": self.rabbit.target.url,
                                              "vhost": self.rabbit.target.vhost}
        return Plan.build(self.topology.name, targets, changes, prune)

    def apply(self, plan: Plan, report: Callable[[str], None]) -> None:
        if plan.impossible:
            raise RuntimeError("refusing to apply a plan with impossible changes")
        if plan.for_broker(Broker.KAFKA):
            self.kafka.apply(plan.actionable, report)
        if plan.for_broker(Broker.RABBITMQ):
            self.rabbit.apply(self.topology, plan.actionable, report)


def brokers_from_option(option: str, topology: Topology) -> tuple[Broker, ...]:
    """`--broker`: kafka, rabbitmq, all; default: the broker the topology runs on."""
    if option == "all":
        return (Broker.KAFKA, Broker.RABBITMQ)
    if option == "default":
        return (Broker(topology.broker.value),)
    return (Broker(option),)
