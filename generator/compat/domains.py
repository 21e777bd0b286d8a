"""What a payload field accepts, old against new: the same, wider, narrower, other, or unknown.

Judged as the generated classes judge values (`topo.generator.emit.fieldtypes`): an address is a
hex string and a hex string a string; an integer is a number (a strict float accepts a JSON
integer); an enum is a string restricted to its values; bounds and lengths narrow a type, and a
pattern narrows a string by an amount topo cannot compare (unknown).
"""

from __future__ import annotations

from enum import StrEnum

from topo.core.model import FieldType, PayloadField


class Relation(StrEnum):
    SAME = "same"
    WIDER = "wider"  # the new field accepts everything the old one did, and more
    NARROWER = "narrower"
    OTHER = "other"  # each accepts values the other refuses
    UNKNOWN = "unknown"  # topo cannot tell (two different patterns)


# type -> the types whose values are a superset of its own (excluding itself)
WIDER_TYPES: dict[FieldType, frozenset[FieldType]] = {
    FieldType.ADDRESS: frozenset({FieldType.HEX, FieldType.STRING}),
    FieldType.HASH32: frozenset({FieldType.HEX, FieldType.STRING}),
    FieldType.HEX: frozenset({FieldType.STRING}),
    FieldType.UINT256: frozenset({FieldType.STRING}),
    FieldType.DATETIME: frozenset({FieldType.STRING}),
    FieldType.ENUM: frozenset({FieldType.STRING}),
    FieldType.INTEGER: frozenset({FieldType.NUMBER}),
}


def combine(first: Relation, second: Relation) -> Relation:
    if first is Relation.SAME:
        return second
    if second is Relation.SAME or first is second:
        return first
    if Relation.OTHER in (first, second):
        return Relation.OTHER
    if Relation.UNKNOWN in (first, second):
        return Relation.UNKNOWN
    return Relation.OTHER  # one wider, one narrower


def type_relation(old: FieldType, new: FieldType) -> Relation:
    if old is new:
        return Relation.SAME
    if new in WIDER_TYPES.get(old, frozenset()):
        return Relation.WIDER
    if old in WIDER_TYPES.get(new, frozenset()):
        return Relation.NARROWER
    return Relation.OTHER


def values_relation(old: tuple[str, ...], new: tuple[str, ...]) -> Relation:
    before, after = set(old), set(new)
    if before == after:
        return Relation.SAME
    if before < after:
        return Relation.WIDER
    if after < before:
        return Relation.NARROWER
    return Relation.OTHER


def lower_bound(old: float | None, new: float | None) -> Relation:
    """A minimum or minimum length: None is no bound."""
    if old == new:
        return Relation.SAME
    if new is None or (old is not None and new < old):
        return Relation.WIDER
    return Relation.NARROWER


def upper_bound(old: float | None, new: float | None) -> Relation:
    if old == new:
        return Relation.SAME
    if new is None or (old is not None and new > old):
        return Relation.WIDER
    return Relation.NARROWER


def pattern_relation(old: str | None, new: str | None) -> Relation:
    if old == new:
        return Relation.SAME
    if new is None:
        return Relation.WIDER
    return Relation.NARROWER if old is None else Relation.UNKNOWN


def element_relation(old: FieldType, old_values: tuple[str, ...], new: FieldType,
                     new_values: tuple[str, ...]) -> Relation:
    if old is FieldType.ENUM and new is FieldType.ENUM:
        return values_relation(old_values, new_values)
    return type_relation(old, new)


def constraints_relation(old: PayloadField, new: PayloadField) -> Relation:
    relation = Relation.SAME
    for part in (lower_bound(old.minimum, new.minimum), upper_bound(old.maximum, new.maximum),
                 lower_bound(old.min_length, new.min_length), upper_bound(old.max_length, new.max_length),
                 pattern_relation(old.pattern, new.pattern)):
        relation = combine(relation, part)
    return relation


def value_relation(old: PayloadField, new: PayloadField) -> Relation:
    """How the set of values the new field accepts compares with the old one's (presence aside)."""
    if (old.type is FieldType.ARRAY) != (new.type is FieldType.ARRAY):
        return Relation.OTHER
    if old.type is FieldType.ARRAY and new.type is FieldType.ARRAY:
        assert old.items is not None and new.items is not None
        base = element_relation(old.items, old.item_values, new.items, new.item_values)
    else:
        base = element_relation(old.type, old.values, new.type, new.values)
    return combine(base, constraints_relation(old, new))


def describe(field: PayloadField) -> str:
    """`address`, `integer >= 0`, `enum [a, b]`, `array of string`: for messages."""
    if field.type is FieldType.ARRAY:
        text = f"array of {field.items.value if field.items else '?'}"
        if field.item_values:
            text += f" [{', '.join(field.item_values)}]"
    elif field.type is FieldType.ENUM:
        text = f"enum [{', '.join(field.values)}]"
    else:
        text = field.type.value
    bounds = [f">= {field.minimum}" if field.minimum is not None else "",
              f"<= {field.maximum}" if field.maximum is not None else "",
              f"length >= {field.min_length}" if field.min_length is not None else "",
              f"length <= {field.max_length}" if field.max_length is not None else "",
              f"matching {field.pattern}" if field.pattern is not None else ""]
    return " ".join([text, *(b for b in bounds if b)])
