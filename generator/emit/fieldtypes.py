"""How each payload field type is spelled in Python (pydantic) and in JSON Schema.

The events and schemas emitters both read this table, so a type means the same thing in the
generated classes and in the JSON Schemas that non-Python consumers use.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any

from topo.core.model import FieldType, PayloadField

ADDRESS_PATTERN = "^0x[0-9a-fA-F]{40}$"
HASH32_PATTERN = "^0x[0-9a-fA-F]{64}$"
HEX_PATTERN = "^0x(?:[0-9a-fA-F]{2})*$"
UINT256_PATTERN = "^(?:0|[1-9][0-9]{0,77})$"
UINT256_MAX = 2**256 - 1
# RFC 3339 with a mandatory offset; `format: date-time` alone is only checked by some validators.
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"


@dataclass(frozen=True)
class PythonSpelling:
    annotation: str  # e.g. "Address", "StrictInt"
    constraints: dict[str, Any]  # Field(...) keyword arguments


# Python names are aliases defined once in the generated module's preamble.
PYTHON_BASE: dict[FieldType, str] = {
    FieldType.STRING: "StrictStr",
    FieldType.INTEGER: "StrictInt",
    FieldType.NUMBER: "FiniteNumber",
    FieldType.BOOLEAN: "StrictBool",
    FieldType.ADDRESS: "Address",
    FieldType.HASH32: "Hash32",
    FieldType.HEX: "HexData",
    FieldType.UINT256: "Uint256",
    FieldType.DATETIME: "UtcDatetime",
}

JSON_BASE: dict[FieldType, dict[str, Any]] = {
    FieldType.STRING: {"type": "string"},
    FieldType.INTEGER: {"type": "integer"},
    FieldType.NUMBER: {"type": "number"},
    FieldType.BOOLEAN: {"type": "boolean"},
    FieldType.ADDRESS: {"type": "string", "pattern": ADDRESS_PATTERN, "description": "0x-prefixed 20-byte address"},
    FieldType.HASH32: {"type": "string", "pattern": HASH32_PATTERN, "description": "0x-prefixed 32-byte hash"},
    FieldType.HEX: {"type": "string", "pattern": HEX_PATTERN, "description": "0x-prefixed hex bytes"},
    FieldType.UINT256: {"type": "string", "pattern": UINT256_PATTERN,
                        "description": "unsigned 256-bit integer as a decimal string"},
    FieldType.DATETIME: {"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN,
                         "description": "RFC 3339 timestamp (normalised to UTC)"},
}


# Attributes of pydantic's BaseModel and of the generated Payload base that a field must not shadow.
RESERVED_ATTRIBUTES = frozenset({
    "construct", "copy", "dict", "from_orm", "json", "parse_file", "parse_obj", "parse_raw", "schema",
    "schema_json", "update_forward_refs", "validate", "EVENT_TYPE", "VERSION", "KEY_FIELD", "ORDERED", "CHAINS",
})


def python_name(field_name: str) -> str:
    """The attribute for a payload field: `from` -> `from_`, `json` -> `json_` (the JSON name is its alias)."""
    if keyword.iskeyword(field_name) or keyword.issoftkeyword(field_name) or field_name in RESERVED_ATTRIBUTES \
            or field_name.startswith("model_"):
        return f"{field_name}_"
    return field_name


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def enum_class_name(owner: str, field: PayloadField) -> str:
    return f"{owner}{pascal(field.name)}"


# Constraints as (model attribute, pydantic Field keyword, JSON Schema keyword), by the kind of
# value they constrain: one table, so both spellings always agree.
Constraint = tuple[str, str, str]
NUMBER_CONSTRAINTS: tuple[Constraint, ...] = (("minimum", "ge", "minimum"), ("maximum", "le", "maximum"))
STRING_CONSTRAINTS: tuple[Constraint, ...] = (("min_length", "min_length", "minLength"),
                                              ("max_length", "max_length", "maxLength"),
                                              ("pattern", "pattern", "pattern"))
ARRAY_CONSTRAINTS: tuple[Constraint, ...] = (("min_length", "min_length", "minItems"),
                                             ("max_length", "max_length", "maxItems"))


def constraints_of(field: PayloadField) -> tuple[Constraint, ...]:
    if field.type is FieldType.ARRAY:
        return ARRAY_CONSTRAINTS
    if field.type is FieldType.STRING:
        return NUMBER_CONSTRAINTS + STRING_CONSTRAINTS
    return () if field.type is FieldType.ENUM else NUMBER_CONSTRAINTS


def spelled_constraints(field: PayloadField, json_schema: bool) -> dict[str, Any]:
    return {(json_keyword if json_schema else pydantic_keyword): getattr(field, attribute)
            for attribute, pydantic_keyword, json_keyword in constraints_of(field)
            if getattr(field, attribute) is not None}


def python_spelling(owner: str, field: PayloadField) -> PythonSpelling:
    constraints = spelled_constraints(field, json_schema=False)
    if field.type is FieldType.ENUM:
        return PythonSpelling(enum_class_name(owner, field), constraints)
    if field.type is FieldType.ARRAY:
        assert field.items is not None
        item = enum_class_name(owner, field) if field.items is FieldType.ENUM else PYTHON_BASE[field.items]
        return PythonSpelling(f"tuple[{item}, ...]", constraints)
    return PythonSpelling(PYTHON_BASE[field.type], constraints)


def json_schema(field: PayloadField) -> dict[str, Any]:
    schema: dict[str, Any]
    if field.type is FieldType.ENUM:
        schema = {"type": "string", "enum": list(field.values)}
    elif field.type is FieldType.ARRAY:
        assert field.items is not None
        items = ({"type": "string", "enum": list(field.item_values)} if field.items is FieldType.ENUM
                 else dict(JSON_BASE[field.items]))
        schema = {"type": "array", "items": items}
    else:
        schema = dict(JSON_BASE[field.type])
    schema.update(spelled_constraints(field, json_schema=True))
    if field.description:
        schema["description"] = field.description
    if not field.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema
