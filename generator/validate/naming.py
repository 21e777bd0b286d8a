"""Naming: the naming templates, then every name the resolved model derives from them.

Topics, routing keys, RabbitMQ exchanges and queues, retry and dead-letter destinations and
Python classes are derived once, by the resolver (`topo.core.names`); these checks read them off
the model built from the document's resolvable part (`resolvable.py`) and point each defect at the
YAML node it comes from: the event or the consumer group it belongs to, the naming template, the
exchange setting, the topology name.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from topo.core.model import Topology
from topo.core.names import DEFAULT_TOPIC_NAMING, NAMING_PLACEHOLDERS, envelope_class_name
from topo.generator.diagnostics import Diagnostic
from topo.generator.document import NodePath
from topo.generator.resolve import resolve
from topo.generator.validate.checker import Checker, display, is_name, suggest
from topo.generator.validate.resolvable import resolvable_part

KAFKA_TOPIC_MAX = 249
RABBIT_NAME_MAX = 255  # bytes, for queues, exchanges and routing keys
KAFKA_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
TEMPLATE_LITERAL = re.compile(r"^[A-Za-z0-9._-]*$")
RABBIT_RESERVED_PREFIX = "amq."
EXCHANGE: NodePath = ("broker", "rabbitmq", "exchange")


def kafka_topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse this topic name, or None."""
    if topic in (".", ".."):
        return "cannot be `.` or `..`"
    if len(topic) > KAFKA_TOPIC_MAX:
        return f"is {len(topic)} characters long; Kafka allows {KAFKA_TOPIC_MAX}"
    if not KAFKA_TOPIC_CHARS.match(topic):
        return "may only contain letters, digits, `.`, `-` and `_`"
    return None


class NameChecker(Checker):
    def run(self, chains: Mapping[int, str]) -> None:
        """`chains`: the declared chains (id -> name), as the semantic checks read them."""
        self.check_exchange_setting()
        templates = self.check_naming(chains)
        projected = resolvable_part(self.data, templates)
        if projected is None:
            return
        try:
            model = resolve(projected)
        except Exception as exc:  # the projection keeps only well-formed values: a failure is a topo bug
            self.report_to.diagnostics.append(Diagnostic(
                "error", self.doc.file, 0, 0, f"internal error while deriving names: {exc!r}",
                "this is a bug in topo's validator; please report it with your topology.yaml"))
            return
        self.check_model(model, set(templates))

    def check_exchange_setting(self) -> None:
        exchange = self.get(EXCHANGE)
        if isinstance(exchange, str) and exchange.startswith(RABBIT_RESERVED_PREFIX):
            self.error(EXCHANGE, f"exchange `{exchange}`: names starting with `amq.` "
                       "are reserved by RabbitMQ", "choose another name, e.g. `<topology>.events`")

    # -- templates -------------------------------------------------------------------------------

    def check_naming(self, chains: Mapping[int, str]) -> dict[str, str]:
        """The usable naming templates (topic, routing_key), each reported when broken."""
        usable: dict[str, str] = {}
        naming = self.mapping(("naming",))
        topic = naming.get("topic", DEFAULT_TOPIC_NAMING)
        for key, template in (("topic", topic), ("routing_key", naming.get("routing_key", topic))):
            if not isinstance(template, str):
                continue
            own = key in naming
            path: NodePath = ("naming", key) if own else ("naming", "topic")
            if self.template_ok(path, template, chains, report=own or key == "topic"):
                usable[key] = template
        return usable

    def template_ok(self, path: NodePath, template: str, chains: Mapping[int, str], *, report: bool) -> bool:
        problems: list[tuple[str, str]] = []
        fields: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            problems.append((f"naming template {display(path)} has unbalanced braces ({exc})",
                             "write placeholders as `{event_type}`; `{{` and `}}` are literal braces"))
            parsed = []
        for literal, field, spec, conversion in parsed:
            if not TEMPLATE_LITERAL.match(literal):
                problems.append((f"naming template {display(path)} contains characters not allowed in topic "
                                 f"names: `{literal}`", "use only letters, digits, `.`, `-` and `_`"))
            if field is None:
                continue
            if field not in NAMING_PLACEHOLDERS or spec or conversion:
                shown = "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                problems.append((f"unknown placeholder `{shown}` in naming template {display(path)}",
                                 suggest(field, NAMING_PLACEHOLDERS) or
                                 "placeholders: " + ", ".join("{" + p + "}" for p in NAMING_PLACEHOLDERS)))
            fields.add(field)
        if parsed and "event_type" not in fields:
            problems.append((f"naming template {display(path)} lacks `{{event_type}}`: every event type would "
                             "share one name", "include `{event_type}`, e.g. `{event_type}.{chain_id}`"))
        if parsed and len(chains) > 1 and not fields & {"chain_id", "chain"}:
            problems.append((f"naming template {display(path)} lacks `{{chain_id}}` or `{{chain}}`: the chains "
                             "of an event would share one name",
                             "include `{chain_id}`, e.g. `{event_type}.{chain_id}`"))
        if report:
            for message, hint in problems:
                self.error(path, message, hint)
        return not problems

    # -- names on the model ----------------------------------------------------------------------

    def check_model(self, model: Topology, checked: set[str]) -> None:
        """Every derived name of `model`; `checked`: the kinds whose template passed (topic, routing_key)."""
        # Kafka refuses topics that differ only by `.` versus `_` (their metric names collide).
        topic_owners: dict[str, tuple[str, NodePath]] = {}
        routing_owners: dict[str, NodePath] = {}
        for event in model.events:
            owner: NodePath = ("events", event.name)
            for topic in event.topics:
                if "topic" in checked:
                    self.claim_topic(topic.topic, owner, topic_owners)
                if "routing_key" in checked:
                    self.claim_routing_key(topic.routing_key, owner, routing_owners)
        self.check_class_names(model)
        self.check_reserved(model)
        exchange_setting = self.get(EXCHANGE)
        # A malformed exchange setting is reported by the schema; the default standing in for it is no one's.
        exchange_known = exchange_setting is None or is_name("exchange", exchange_setting)
        for group in model.groups:
            owner = ("consumer_groups", group.name)
            if exchange_known and group.rabbitmq.exchange == model.rabbitmq.exchange:
                self.error(owner, f"consumer group `{group.name}` would get the exchange `{group.rabbitmq.exchange}`, "
                           "which is the topology's exchange", "rename the group or set broker.rabbitmq.exchange",
                           key=True)
            for name in (group.kafka.dlq_topic, *(retry.name for retry in group.kafka.retry_topics)):
                self.claim_topic(name, owner, topic_owners)
            rabbit = group.rabbitmq
            # Ties go to the last work queue, then the dead-letter queue: the names users see first.
            names = [*reversed(rabbit.queues), rabbit.dlq_queue, *(r.name for r in rabbit.retry_queues),
                     rabbit.exchange]
            longest = max(names, key=lambda name: len(name.encode()))
            if len(longest.encode()) > RABBIT_NAME_MAX:
                self.error(owner, f"RabbitMQ name `{longest}` is longer than {RABBIT_NAME_MAX} bytes",
                           "shorten the topology or group name", key=True)

    def claim_topic(self, topic: str, owner: NodePath, owners: dict[str, tuple[str, NodePath]]) -> None:
        """A Kafka topic of `owner`: valid, and not taken by another owner (`owners`: normalised name -> first)."""
        problem = kafka_topic_problem(topic)
        if problem:
            self.error(owner, f"Kafka topic `{topic}` {problem}", "shorten the names it is made of", key=True)
            return
        normal = topic.replace(".", "_")
        previous = owners.get(normal)
        if previous and previous[1] != owner:
            same = "is also" if previous[0] == topic else f"collides with `{previous[0]}`, "
            self.error(owner, f"Kafka topic `{topic}` {same} derived from {display(previous[1])}"
                       + ("" if previous[0] == topic else " (Kafka treats `.` and `_` alike)"),
                       "rename one of them, or change the naming template", key=True)
        else:
            owners.setdefault(normal, (topic, owner))

    def claim_routing_key(self, key: str, owner: NodePath, owners: dict[str, NodePath]) -> None:
        if len(key.encode()) > RABBIT_NAME_MAX:
            self.error(owner, f"RabbitMQ routing key `{key}` is longer than {RABBIT_NAME_MAX} bytes",
                       "shorten the event name or the naming template", key=True)
        previous = owners.get(key)
        if previous and previous != owner:
            self.error(owner, f"RabbitMQ routing key `{key}` is also derived from {display(previous)}",
                       "rename one of them, or change the naming template", key=True)
        owners.setdefault(key, owner)

    def check_class_names(self, model: Topology) -> None:
        # Each event gets a payload class and an envelope class in one module.
        owners: dict[str, str] = {}
        for event in model.events:
            generated = (event.class_name, envelope_class_name(event.class_name))
            for name in generated:
                other = owners.get(name)
                if other is not None:
                    self.error(("events", event.name), f"event `{event.name}` and event `{other}` would both "
                               f"generate the Python class `{name}`", "rename one of them", key=True)
                    break
            for name in generated:
                owners.setdefault(name, event.name)

    def check_reserved(self, model: Topology) -> None:
        """RabbitMQ refuses to create names in `amq.`; a set exchange is checked where it is written."""
        derived = [group_name for group in model.groups for group_name in
                   (group.rabbitmq.exchange, *group.rabbitmq.queues, group.rabbitmq.dlq_queue)]
        if not isinstance(self.get(EXCHANGE), str):
            derived.append(model.rabbitmq.exchange)
        if any(name.startswith(RABBIT_RESERVED_PREFIX) for name in derived):
            self.error(("name",), f"the topology name `{model.name}` would give RabbitMQ names starting with "
                       "`amq.`, which RabbitMQ reserves", "choose another name")
