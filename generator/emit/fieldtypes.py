"""How each payload field type is spelled in Python (pydantic) and in JSON Schema.

The events and schemas emitters both read this table, so a type means the same thing in the
generated classes and in the JSON Schemas that non-Python consumers use.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any

from topo.generator.model import FieldType, PayloadField

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


def _scalar_constraints(field: PayloadField) -> dict[str, Any]:
    constraints: dict[str, Any] = {}
    if field.minimum is not None:
        constraints["ge"] = field.minimum
    if field.maximum is not None:
        constraints["le"] = field.maximum
    if field.type is FieldType.STRING:
        if field.min_length is not None:
            constraints["min_length"] = field.min_length
        if field.max_length is not None:
            constraints["max_length"] = field.max_length
        if field.pattern is not None:
            constraints["pattern"] = field.pattern
    return constraints


def python_spelling(owner: str, field: PayloadField) -> PythonSpelling:
    if field.type is FieldType.ENUM:
        return PythonSpelling(enum_class_name(owner, field), {})
    if field.type is FieldType.ARRAY:
        assert field.items is not None
        item = enum_class_name(owner, field) if field.items is FieldType.ENUM else PYTHON_BASE[field.items]
        constraints: dict[str, Any] = {}
        if field.min_length is not None:
            constraints["min_length"] = field.min_length
        if field.max_length is not None:
            constraints["max_length"] = field.max_length
        return PythonSpelling(f"tuple[{item}, ...]", constraints)
    return PythonSpelling(PYTHON_BASE[field.type], _scalar_constraints(field))


def json_schema(field: PayloadField) -> dict[str, Any]:
    schema: dict[str, Any]
    if field.type is FieldType.ENUM:
        schema = {"type": "string", "enum": list(field.values)}
    elif field.type is FieldType.ARRAY:
        assert field.items is not None
        items = ({"type": "string", "enum": list(field.item_values)} if field.items is FieldType.ENUM
                 else dict(JSON_BASE[field.items]))
        schema = {"type": "array", "items": items}
        if field.min_length is not None:
            schema["minItems"] = field.min_length
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
    else:
        schema = dict(JSON_BASE[field.type])
        if field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
        if field.type is FieldType.STRING:
            if field.min_length is not None:
                schema["minLength"] = field.min_length
            if field.max_length is not None:
                schema["maxLength"] = field.max_length
            if field.pattern is not None:
                schema["pattern"] = field.pattern
    if field.description:
        schema["description"] = field.description
    if not field.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema
