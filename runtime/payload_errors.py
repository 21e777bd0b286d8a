"""A payload's validation errors in the user's terms: one line per field, `payload.block_number: must be
>= 0 (got -5)`, instead of pydantic's multi-line report with its type codes and documentation URLs."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# pydantic error type -> the requirement, from the error's context (`ctx`)
BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
          "less_than": ("<", "lt"), "multiple_of": ("a multiple of", "multiple_of")}
KINDS = {"int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
         "dict": "an object", "list": "a list", "decimal": "a number", "uuid": "a UUID",
         "datetime": "an RFC 3339 date-time", "date": "a date (YYYY-MM-DD)"}
GOT_LIMIT = 60  # characters of the offending value quoted back


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str  # e.g. payload.block_number, payload.items[2].token
    requirement: str  # e.g. "must be >= 0", "required", "unknown field"
    got: str | None  # the offending value as JSON (None: absent)

    @property
    def missing(self) -> bool:
        return self.requirement == "required"

    def __str__(self) -> str:
        return f"{self.field}: {self.requirement}" + ("" if self.got is None else f" (got {self.got})")


def field_path(root: str, location: Sequence[int | str]) -> str:
    """`root.a[2].b`; union member tags pydantic adds to the location (`int`, `function-after[...]`) dropped."""
    path = root
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" not in part and part not in KINDS and part not in ("none", "str", "enum", "literal"):
            path += f".{part}"
    return path


def requirement(error: ErrorDetails, known_fields: Sequence[str]) -> str:
    kind, context = error["type"], error.get("ctx", {})
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        name = str(error["loc"][-1]) if error["loc"] else ""
        close = difflib.get_close_matches(name, list(known_fields), n=1)
        return "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind in BOUNDS:
        operator, key = BOUNDS[kind]
        return f"must be {operator} {context.get(key)}"
    if kind.endswith(("_type", "_parsing")) and kind.rsplit("_", 1)[0] in KINDS:
        return f"must be {KINDS[kind.rsplit('_', 1)[0]]}"
    if kind in ("string_too_short", "too_short"):
        return f"must have at least {context.get('min_length')} {'character' if 'string' in kind else 'item'}(s)"
    if kind in ("string_too_long", "too_long"):
        return f"must have at most {context.get('max_length')} {'character' if 'string' in kind else 'item'}(s)"
    if kind == "string_pattern_mismatch":
        return f"must match {context.get('pattern')}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return message[:1].lower() + message[1:]


def quoted(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= GOT_LIMIT else text[:GOT_LIMIT - 3] + "..."


def field_problems(error: ValidationError, root: str = "payload", known_fields: Sequence[str] = ()
                   ) -> tuple[FieldProblem, ...]:
    """One problem per field (the first pydantic reports for it), in pydantic's order."""
    problems: dict[str, FieldProblem] = {}
    for detail in error.errors(include_url=False):
        field = field_path(root, detail["loc"])
        # the offending value; not for a missing field, nor for a check of the whole payload
        got = None if detail["type"] == "missing" or not detail["loc"] else quoted(detail.get("input"))
        problems.setdefault(field, FieldProblem(field, requirement(detail, known_fields), got))
    return tuple(problems.values())
