"""Turns a validated topology document into the resolved model.

The input is the plain data of topology.yaml after schema and semantic validation
(`topo.generator.validate`), so this module applies defaults and derives names; it does not
report user errors. Connection settings are copied verbatim, `${VAR}` references included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from topo.core.durations import parse_duration
from topo.core.model import (
    AlertThresholds,
    BrokerKind,
    Chain,
    Compatibility,
    ConsumerGroup,
    DedupSettings,
    Delivery,
    DeploySettings,
    EnvelopeFormat,
    EventTopic,
    EventType,
    FieldType,
    KafkaGroupPlumbing,
    KafkaSettings,
    KafkaTopicSettings,
    PayloadField,
    RabbitGroupPlumbing,
    RabbitSettings,
    Reader,
    RetryPolicy,
    Subscription,
    Topology,
)
from topo.core.names import (
    CHAIN_ID,
    CRASH_LOOP_ALLOWANCE,
    DEFAULT_ALERTS,
    DEFAULT_COMPATIBILITY,
    DEFAULT_DEDUP_CAPACITY,
    DEFAULT_DEDUP_STORE,
    DEFAULT_DEDUP_TABLE,
    DEFAULT_ENVELOPE,
    DEFAULT_EVENT_VERSION,
    DEFAULT_KAFKA,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_PARTITIONS,
    DEFAULT_RABBITMQ,
    DEFAULT_READER,
    DEFAULT_RETRY,
    DEFAULT_TOPIC_NAMING,
    DLQ_MIN_RETENTION_MS,
    KEY_HEADER,
    MIN_INSYNC_REPLICAS,
    class_name,
    default_exchange,
    default_image,
    default_min_insync_replicas,
    dlq_name,
    events_module,
    format_name,
    group_prefix,
    hash_exchange_type,
    plumbing_topic_settings,
    retry_destinations,
    work_queue_names,
)

Doc = Mapping[str, Any]


def _section(doc: Doc | None, key: str) -> Doc:
    value = (doc or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def _merge(base: Doc, override: Doc) -> dict[str, Any]:
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_retry(spec: Doc) -> RetryPolicy:
    merged = _merge(DEFAULT_RETRY, spec)
    initial = parse_duration(merged["initial"])
    multiplier = float(merged["multiplier"])
    ceiling = parse_duration(merged["max"])
    backoff = merged["backoff"]
    count = int(merged["max_retries"])
    if backoff == "fixed":
        delays = [initial] * count
    else:
        delays = [min(initial * multiplier**attempt, ceiling) for attempt in range(count)]
    return RetryPolicy(max_retries=count, backoff=backoff, initial_seconds=initial, multiplier=multiplier,
                       max_seconds=ceiling, delays_seconds=tuple(round(d, 3) for d in delays))


def resolve_alerts(spec: Doc) -> AlertThresholds:
    merged = _merge(DEFAULT_ALERTS, spec)
    lag, dead, errors, stalled = (merged["consumer_lag"], merged["dead_letter"], merged["error_rate"],
                                  merged["stalled"])
    return AlertThresholds(
        lag_events=int(lag["events"]),
        lag_seconds=parse_duration(lag["seconds"]),
        lag_for_seconds=parse_duration(lag["for"]),
        dead_letter_events=int(dead["events"]),
        error_rate_ratio=float(errors["ratio"]),
        error_rate_for_seconds=parse_duration(errors["for"]),
        stalled_for_seconds=parse_duration(stalled["for"]),
    )


def resolve_field(name: str, spec: str | Doc) -> PayloadField:
    if isinstance(spec, str):
        return PayloadField(name=name, type=FieldType(spec))
    items = spec.get("items")
    item_spec: Doc = items if isinstance(items, Mapping) else {"type": items} if items else {}
    return PayloadField(
        name=name,
        type=FieldType(spec["type"]),
        required=bool(spec.get("required", True)),
        description=str(spec.get("description", "")),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
        min_length=spec.get("min_length"),
        max_length=spec.get("max_length"),
        pattern=spec.get("pattern"),
        values=tuple(str(v) for v in spec.get("values", ())),
        items=FieldType(item_spec["type"]) if item_spec else None,
        item_values=tuple(str(v) for v in item_spec.get("values", ())),
    )


def resolve_payload(spec: Doc) -> tuple[PayloadField, ...]:
    # Every payload carries its chain, as in the spec's examples; the envelope repeats it.
    fields = [resolve_field(name, field) for name, field in spec.items()]
    if not any(f.name == CHAIN_ID for f in fields):
        fields.insert(0, PayloadField(name=CHAIN_ID, type=FieldType.INTEGER, minimum=0,
                                      description="Chain the event belongs to (repeated in the envelope)."))
    return tuple(fields)


def kafka_configs(event: Doc, defaults: Doc) -> dict[str, str]:
    configs: dict[str, str] = {}
    retention = event.get("retention", defaults.get("retention"))
    if retention is not None:
        configs["retention.ms"] = str(round(parse_duration(retention) * 1000))
    cleanup = event.get("cleanup_policy", defaults.get("cleanup_policy"))
    if cleanup is not None:
        configs["cleanup.policy"] = str(cleanup)
    for key, value in {**_section(defaults, "configs"), **_section(event, "configs")}.items():
        configs[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return dict(sorted(configs.items()))


def with_min_insync_replicas(configs: dict[str, str], replication_factor: int,
                             event: Doc, defaults: Doc, kafka_doc: Doc) -> dict[str, str]:
    """Topic configs with `min.insync.replicas`: the nearest layer that sets it (the event, then
    `defaults`, as `min_insync_replicas` or in `configs`; validation forbids both on one layer),
    then `broker.kafka.min_insync_replicas`, else the default for the replication factor."""
    chosen: int | None = None
    for layer in (event, defaults):
        if "min_insync_replicas" in layer:
            chosen = int(layer["min_insync_replicas"])
        elif MIN_INSYNC_REPLICAS in _section(layer, "configs"):
            chosen = int(layer["configs"][MIN_INSYNC_REPLICAS])
        if chosen is not None:
            break
    if chosen is None and "min_insync_replicas" in kafka_doc:
        chosen = int(kafka_doc["min_insync_replicas"])
    if chosen is None:
        chosen = default_min_insync_replicas(replication_factor)
    if chosen is None:
        return configs
    return dict(sorted({**configs, MIN_INSYNC_REPLICAS: str(chosen)}.items()))


def _event_topic_settings(event: Doc, defaults: Doc, kafka_doc: Doc, kafka: KafkaSettings) -> KafkaTopicSettings:
    replication_factor = int(event.get("replication_factor", defaults.get("replication_factor",
                                                                          kafka.replication_factor)))
    return KafkaTopicSettings(
        partitions=int(event.get("partitions", defaults.get("partitions", kafka.partitions))),
        replication_factor=replication_factor,
        configs=with_min_insync_replicas(kafka_configs(event, defaults), replication_factor,
                                         event, defaults, kafka_doc),
    )


def resolve(doc: Doc) -> Topology:
    name = str(doc["name"])
    defaults = _section(doc, "defaults")
    broker = _section(doc, "broker")
    kafka_doc, rabbit_doc = _section(broker, "kafka"), _section(broker, "rabbitmq")
    naming = _section(doc, "naming")
    topic_naming = str(naming.get("topic", DEFAULT_TOPIC_NAMING))
    routing_naming = str(naming.get("routing_key", topic_naming))

    kafka = KafkaSettings(
        bootstrap_servers=str(kafka_doc.get("bootstrap_servers", DEFAULT_KAFKA["bootstrap_servers"])),
        security_protocol=str(kafka_doc.get("security_protocol", DEFAULT_KAFKA["security_protocol"])),
        sasl_mechanism=str(kafka_doc.get("sasl_mechanism", DEFAULT_KAFKA["sasl_mechanism"])),
        sasl_username=str(kafka_doc.get("sasl_username", DEFAULT_KAFKA["sasl_username"])),
        sasl_password=str(kafka_doc.get("sasl_password", DEFAULT_KAFKA["sasl_password"])),
        partitions=int(kafka_doc.get("partitions", DEFAULT_PARTITIONS)),
        replication_factor=int(kafka_doc.get("replication_factor", 1)),
    )
    rabbitmq = RabbitSettings(
        url=str(rabbit_doc.get("url", DEFAULT_RABBITMQ["url"])),
        management_url=str(rabbit_doc.get("management_url", DEFAULT_RABBITMQ["management_url"])),
        exchange=str(rabbit_doc.get("exchange", default_exchange(name))),
        partitions=int(rabbit_doc.get("partitions", DEFAULT_PARTITIONS)),
        key_header=KEY_HEADER,
    )

    chains = tuple(Chain(id=int(cid), name=str((spec or {}).get("name", cid)))
                   for cid, spec in _section(doc, "chains").items())

    events_doc = _section(doc, "events")
    groups_doc = _section(doc, "consumer_groups")
    consumers: dict[str, list[str]] = {event: [] for event in events_doc}
    for group_name, group_doc in groups_doc.items():
        for item in _subscription_items(group_doc):
            if group_name not in consumers[item["event"]]:
                consumers[item["event"]].append(group_name)

    default_key = str(defaults.get("key", CHAIN_ID))
    default_ordered = bool(defaults.get("ordered", False))
    events: list[EventType] = []
    for event_name, event_doc in events_doc.items():
        event_chains = [c for c in chains if c.id in set(event_doc.get("chains", [c.id for c in chains]))]
        topics = tuple(
            EventTopic(
                event=event_name,
                chain_id=chain.id,
                chain_name=chain.name,
                topic=format_name(topic_naming, event_type=event_name, chain_id=chain.id, chain=chain.name,
                                  topology=name),
                routing_key=format_name(routing_naming, event_type=event_name, chain_id=chain.id,
                                        chain=chain.name, topology=name),
            )
            for chain in event_chains
        )
        events.append(EventType(
            name=event_name,
            class_name=class_name(event_name),
            description=str(event_doc.get("description", "")),
            version=str(event_doc.get("version", DEFAULT_EVENT_VERSION)),
            producers=tuple(event_doc.get("producers", ())),
            key=str(event_doc.get("key", default_key)),
            ordered=bool(event_doc.get("ordered", default_ordered)),
            payload=resolve_payload(_section(event_doc, "payload")),
            kafka=_event_topic_settings(event_doc, defaults, kafka_doc, kafka),
            topics=topics,
            consumers=tuple(consumers[event_name]),
            reader=Reader(event_doc.get("reader", defaults.get("reader", DEFAULT_READER))),
            compatibility=Compatibility(event_doc.get("compatibility",
                                                      defaults.get("compatibility", DEFAULT_COMPATIBILITY))),
            envelope=EnvelopeFormat(event_doc.get("envelope", defaults.get("envelope", DEFAULT_ENVELOPE))),
        ))
    by_name = {event.name: event for event in events}

    alerts = resolve_alerts(_section(doc, "alerts"))
    groups = [
        _resolve_group(name, group_name, group_doc, defaults, by_name, rabbitmq, _section(doc, "alerts"), kafka)
        for group_name, group_doc in groups_doc.items()
    ]
    producers = sorted({p for event in events for p in event.producers})
    deploy = _section(doc, "deploy")
    return Topology(
        version=int(doc["version"]),
        name=name,
        description=str(doc.get("description", "")),
        broker=BrokerKind(broker.get("kind", BrokerKind.KAFKA)),
        kafka=kafka,
        rabbitmq=rabbitmq,
        chains=chains,
        events=tuple(events),
        groups=tuple(groups),
        alerts=alerts,
        producers=tuple(producers),
        events_module=events_module(name),
        deploy=DeploySettings(image=str(deploy.get("image", default_image(name))),
                              namespace=deploy.get("namespace")),
    )


def _subscription_items(group_doc: Doc) -> list[dict[str, Any]]:
    items: Sequence[Any] = group_doc.get("subscribes", ())
    return [dict(item) if isinstance(item, Mapping) else {"event": str(item)} for item in items]


def _resolve_group(topology: str, group_name: str, group_doc: Doc, defaults: Doc, events: Mapping[str, EventType],
                   rabbit: RabbitSettings, topology_alerts: Doc, kafka: KafkaSettings) -> ConsumerGroup:
    subscriptions = []
    for item in _subscription_items(group_doc):
        event = events[item["event"]]
        wanted = set(item.get("chains", [t.chain_id for t in event.topics]))
        topics = [t for t in event.topics if t.chain_id in wanted]
        subscriptions.append(Subscription(
            event=event.name,
            chains=tuple(t.chain_id for t in topics),
            handler=item.get("handler"),
            ordered=event.ordered,
            topics=tuple(t.topic for t in topics),
            routing_keys=tuple(t.routing_key for t in topics),
        ))
    retry = resolve_retry(_merge(_section(defaults, "retry"), _section(group_doc, "retry")))
    ordered = any(s.ordered for s in subscriptions)
    needs_retry_plumbing = any(not s.ordered for s in subscriptions) and retry.max_retries > 0
    delivery = Delivery(group_doc.get("delivery", defaults.get("delivery", Delivery.AT_LEAST_ONCE)))
    prefix = group_prefix(topology, group_name)
    partitions = int(group_doc.get("partitions", rabbit.partitions))
    dedup_doc = _merge(_section(defaults, "dedup"), _section(group_doc, "dedup"))
    subscribed = [events[name] for name in dict.fromkeys(s.event for s in subscriptions)]
    return ConsumerGroup(
        name=group_name,
        description=str(group_doc.get("description", "")),
        delivery=delivery,
        handler=group_doc.get("handler"),
        subscriptions=tuple(subscriptions),
        publishes=tuple(dict.fromkeys(str(name) for name in group_doc.get("publishes", ()))),
        retry=retry,
        max_in_flight=int(group_doc.get("max_in_flight", defaults.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT))),
        dedup=DedupSettings(
            store=dedup_doc.get("store", DEFAULT_DEDUP_STORE),
            capacity=int(dedup_doc.get("capacity", DEFAULT_DEDUP_CAPACITY)),
            path=dedup_doc.get("path"),
            dsn=dedup_doc.get("dsn"),
            table=dedup_doc.get("table", DEFAULT_DEDUP_TABLE),
        ),
        alerts=resolve_alerts(_merge(topology_alerts, _section(group_doc, "alerts"))),
        ordered=ordered,
        kafka=KafkaGroupPlumbing(
            group_id=prefix,
            retry_topics=retry_destinations(prefix, retry) if needs_retry_plumbing else (),
            dlq_topic=dlq_name(prefix),
            transactional_id_prefix=prefix if delivery is Delivery.EXACTLY_ONCE else None,
            retry_topic_settings=(plumbing_topic_settings([e for e in subscribed if not e.ordered], kafka)
                                  if needs_retry_plumbing else None),
            dlq_topic_settings=plumbing_topic_settings(subscribed, kafka, DLQ_MIN_RETENTION_MS),
        ),
        rabbitmq=RabbitGroupPlumbing(
            exchange=prefix,
            exchange_type=hash_exchange_type(partitions),
            hash_header=rabbit.key_header if partitions > 1 else None,
            queues=work_queue_names(prefix, partitions),
            single_active_consumer=ordered,
            delivery_limit=retry.max_retries + CRASH_LOOP_ALLOWANCE,
            retry_queues=retry_destinations(prefix, retry) if needs_retry_plumbing else (),
            dlq_queue=dlq_name(prefix),
        ),
    )
