"""Payload changes of one event, judged by what the generated classes accept on each side.

Producers side: readers built from the OLD topology read events NEW writers publish (FORWARD).
Consumers side: readers built from the NEW topology read events OLD writers published (BACKWARD).
A reader is tolerant (unknown fields accepted) unless its event says `reader: strict`; a writer
always sends every declared field (`null` when an optional one is unset).
"""

from __future__ import annotations

from topo.core.model import EventType, FieldType, PayloadField, Reader
from topo.generator.compat.domains import Relation, describe, value_relation
from topo.generator.compat.rules import Change, Level, Side

SAFE, CARE, BREAKING = Level.SAFE, Level.CARE, Level.BREAKING
# (producers level, consumers level) of a value-set relation, new field against old
BY_RELATION: dict[Relation, tuple[Level, Level]] = {
    Relation.WIDER: (BREAKING, SAFE),
    Relation.NARROWER: (SAFE, BREAKING),
    Relation.OTHER: (BREAKING, BREAKING),
    Relation.UNKNOWN: (CARE, CARE),
}


def unknown_field_level(reader: Reader) -> Level:
    """What a field the reader does not declare does to it."""
    return SAFE if reader is Reader.TOLERANT else BREAKING


def both_sides(rule: str, event: str, field: str, message: str, producers: Level, consumers: Level
               ) -> list[Change]:
    path = ("events", event, "payload", field)
    return [Change(rule, Side.PRODUCERS, producers, f"event {event}", path, message, payload=True, event=event),
            Change(rule, Side.CONSUMERS, consumers, f"event {event}", path, message, payload=True, event=event)]


def value_rule(old: PayloadField, new: PayloadField, relation: Relation) -> str:
    if relation is Relation.UNKNOWN:
        return "field-pattern-changed"
    enums = (old.type is new.type is FieldType.ENUM) or (
        old.type is new.type is FieldType.ARRAY and old.items is new.items is FieldType.ENUM)
    if enums and relation is Relation.WIDER:
        return "enum-values-added"
    if enums and relation is Relation.NARROWER:
        return "enum-values-removed"
    return {Relation.WIDER: "field-type-widened", Relation.NARROWER: "field-type-narrowed"}.get(
        relation, "field-type-changed")


def field_changes(event: str, old: PayloadField | None, new: PayloadField | None, old_reader: Reader,
                  new_reader: Reader) -> list[Change]:
    present = new if new is not None else old
    name = present.name if present is not None else ""
    if old is None and new is not None:
        kind = "required" if new.required else "optional"
        return both_sides(f"field-added-{kind}", event, name, f"{kind} field {name} ({describe(new)}) added",
                          unknown_field_level(old_reader), BREAKING if new.required else SAFE)
    if new is None and old is not None:
        kind = "required" if old.required else "optional"
        return both_sides(f"field-removed-{kind}", event, name, f"{kind} field {name} ({describe(old)}) removed",
                          BREAKING if old.required else SAFE, unknown_field_level(new_reader))
    assert old is not None and new is not None
    changes: list[Change] = []
    if old.required != new.required:
        if new.required:
            changes += both_sides("field-made-required", event, name, f"field {name} made required", SAFE, BREAKING)
        else:
            changes += both_sides("field-made-optional", event, name, f"field {name} made optional", BREAKING, SAFE)
    relation = value_relation(old, new)
    if relation is not Relation.SAME:
        producers, consumers = BY_RELATION[relation]
        changes += both_sides(value_rule(old, new, relation), event, name,
                              f"field {name}: {describe(old)} -> {describe(new)} ({relation.value})",
                              producers, consumers)
    return changes


def payload_changes(old: EventType, new: EventType) -> list[Change]:
    """Every payload change of an event present in both topologies."""
    before = {field.name: field for field in old.payload}
    after = {field.name: field for field in new.payload}
    changes: list[Change] = []
    for name in [*before, *(n for n in after if n not in before)]:
        changes += field_changes(new.name, before.get(name), after.get(name), old.reader, new.reader)
    subject, path = f"event {new.name}", ("events", new.name)
    if old.reader is not new.reader:
        strict = new.reader is Reader.STRICT
        changes.append(Change("reader-made-strict" if strict else "reader-made-tolerant", Side.CONSUMERS,
                              CARE if strict else SAFE, subject, (*path, "reader"),
                              f"reader {old.reader.value} -> {new.reader.value}", event=new.name))
    if old.version != new.version:
        changes.append(Change("event-version-changed", Side.PRODUCERS, SAFE, subject, (*path, "version"),
                              f"version {old.version} -> {new.version}", event=new.name))
    if old.compatibility is not new.compatibility:
        changes.append(Change("compatibility-changed", Side.CONSUMERS, SAFE, subject, (*path, "compatibility"),
                              f"compatibility {old.compatibility.value} -> {new.compatibility.value}",
                              event=new.name))
    return changes
