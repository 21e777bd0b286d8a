"""generated/python/<topology>_events.py: typed pydantic v2 classes for every event."""

from __future__ import annotations

import json
import keyword
import re
from typing import Any

from topo.core.model import EventType, FieldType, PayloadField, Reader, Topology
from topo.generator.emit.fieldtypes import (
    ADDRESS_PATTERN,
    HASH32_PATTERN,
    HEX_PATTERN,
    UINT256_PATTERN,
    enum_class_name,
    python_name,
    python_spelling,
)
from topo.generator.render import render

TEMPLATE = "python/events.py.j2"
MAX_LINE = 100  # generated code passes the project's ruff line length with room for indentation
STRING_CHUNK = 60
BASE_IMPORTS = ("AfterValidator", "AwareDatetime", "BaseModel", "ConfigDict", "Field", "StrictInt", "StrictStr",
                "StringConstraints", "model_validator")


def module_path(topology: Topology) -> str:
    return f"python/{topology.events_module}.py"


def enum_members(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """Enum member names from values: `partially_verified` -> PARTIALLY_VERIFIED, unique."""
    members: list[tuple[str, str]] = []
    taken: set[str] = set()
    for value in values:
        name = re.sub(r"\W", "_", value).upper() or "EMPTY"
        if name[0].isdigit() or name.startswith("_") or keyword.iskeyword(name):
            name = f"V_{name}"
        base, suffix = name, 2
        while name in taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(name)
        members.append((name, value))
    return members


def python_literal(value: Any) -> str:
    """A Python literal for a constraint value; strings double-quoted as ruff's default style."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def string_lines(text: str, width: int = STRING_CHUNK) -> list[str]:
    """A long string as implicitly concatenated chunks, so generated lines stay short."""
    chunks = [text[i:i + width] for i in range(0, len(text), width)] or [""]
    return [json.dumps(chunk) for chunk in chunks]


def field_lines(owner: str, field: PayloadField) -> list[str]:
    """Source lines of one field declaration (relative to the class body's indentation)."""
    spelling = python_spelling(owner, field)
    attribute = python_name(field.name)
    arguments = [f"{key}={python_literal(value)}" for key, value in spelling.constraints.items()]
    if attribute != field.name:
        arguments.insert(0, f"alias={json.dumps(field.name)}")
    annotation = spelling.annotation if field.required else f"{spelling.annotation} | None"
    default = "" if field.required else " = None"
    if not arguments and not field.description:
        return [f"{attribute}: {annotation}{default}"]
    one_line = ", ".join([*arguments, f"description={json.dumps(field.description)}"] if field.description
                         else arguments)
    line = f"{attribute}: Annotated[{annotation}, Field({one_line})]{default}"
    if len(line) <= MAX_LINE:
        return [line]
    lines = [f"{attribute}: Annotated[", f"    {annotation},", "    Field("]
    lines += [f"        {argument}," for argument in arguments]
    if field.description:
        chunks = string_lines(field.description)
        lines += ["        description=(", *(f"            {chunk}" for chunk in chunks), "        ),"]
    lines += ["    ),", f"]{default}"]
    return lines


def docstring(event: EventType) -> str:
    text = event.description or f"Payload of {event.name}."
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def emit(topology: Topology) -> dict[str, str]:
    enums: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for event in topology.events:
        for field in event.payload:
            values = field.values if field.type is FieldType.ENUM else field.item_values
            if values:
                enums.append({"name": enum_class_name(event.class_name, field), "members": enum_members(values)})
        events.append({
            "name": event.name,
            "class_name": event.class_name,
            "doc": docstring(event),
            "version": event.version,
            "key": event.key,
            "ordered": event.ordered,
            "strict_reader": event.reader is Reader.STRICT,
            "chains": sorted(topic.chain_id for topic in event.topics),
            "fields": [{"lines": field_lines(event.class_name, field)} for field in event.payload],
        })
    patterns = {"address": ADDRESS_PATTERN, "hash32": HASH32_PATTERN, "hex": HEX_PATTERN, "uint256": UINT256_PATTERN}
    uses_bool = any(FieldType.BOOLEAN in (f.type, f.items) for e in topology.events for f in e.payload)
    imports = sorted({*BASE_IMPORTS, *(("StrictBool",) if uses_bool else ())}, key=lambda name: (
        not name[0].isupper(), name))
    text = render(TEMPLATE, topology=topology.name, patterns=patterns, enums=enums, events=events,
                  pydantic_imports=imports)
    return {module_path(topology): text}
