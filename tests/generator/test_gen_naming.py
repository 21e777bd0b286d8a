"""Derived names are checked on the resolved model, even when the document has other errors."""

from __future__ import annotations

from topo.generator.parse import parse_text
from topo.generator.validate import validate

SHOP = """version: 1
name: shop
chains:
  1: {name: 1s}
naming:
  topic: "{topology}.{event_type}.{chain}"
events:
  order.placed:
    producers: [web]
    ordered: ORDERED
  billing.retry:
    producers: [web]
consumer_groups:
  billing:
    subscribes: [order.placed]
  audit:
    subscribes: [billing.retry]
"""


def errors_of(text: str) -> list[tuple[int, int, str]]:
    document, diagnostics = parse_text(text, "t.yaml")
    assert document is not None and diagnostics == []
    return [(d.line, d.col, d.message) for d in validate(document, {}) if d.is_error]


def test_a_retry_topic_collides_only_when_the_group_has_one() -> None:
    # An unordered subscription gives `billing` the retry topic `shop.billing.retry.1s`, which is
    # also the topic of event `billing.retry` on chain `1s`; ordered events are retried in place.
    assert errors_of(SHOP.replace("ORDERED", "false")) == [
        (14, 3, "Kafka topic `shop.billing.retry.1s` is also derived from `events.\"billing.retry\"`")]
    assert errors_of(SHOP.replace("ORDERED", "true")) == []


def test_names_are_checked_alongside_errors_elsewhere() -> None:
    text = (SHOP.replace("ORDERED", "false").replace("    producers: [web]\n    ordered",
                                                      "    producers: [web]\n    payload: {id: strin}\n    ordered")
            + "    retry: {max_retries: many}\nalerts: {error_rate: {ratio: 2}}\n")
    places = [(line, col) for line, col, _ in errors_of(text)]
    assert places == [(10, 19), (15, 3), (19, 26), (20, 30)]


def test_a_malformed_value_does_not_stand_in_for_a_name() -> None:
    # The malformed exchange is reported once; its default `shop.events` is nobody's exchange.
    text = SHOP.replace("ORDERED", "true").replace("  audit:", "  events:").replace(
        "chains:", "broker:\n  rabbitmq: {exchange: 'no spaces'}\nchains:")
    assert [message for _, _, message in errors_of(text)] == ["`broker.rabbitmq.exchange`: `no spaces` is not valid"]


def test_a_broken_template_reports_only_the_template() -> None:
    text = SHOP.replace("ORDERED", "false").replace("{topology}.{event_type}.{chain}", "{topology}.{evnt}")
    assert [(line, col) for line, col, _ in errors_of(text)] == [(6, 10), (6, 10)]


def test_the_topology_name_amq_is_reserved_once() -> None:
    text = SHOP.replace("ORDERED", "true").replace("name: shop", "name: amq")
    assert errors_of(text) == [
        (2, 7, "the topology name `amq` would give RabbitMQ names starting with `amq.`, which RabbitMQ reserves")]
