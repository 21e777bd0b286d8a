"""What every validation concern shares: the document, its data by path, and the report.

Each concern (schema, values, semantics, names) is a `Checker` over one shared `Report`, so one
run collects every diagnostic. Data access is tolerant: a missing or mistyped node reads as
None or as an empty mapping, because every check runs on a partly invalid document.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from topo.generator.diagnostics import Diagnostic, Severity
from topo.generator.document import Document, NodePath, Span
from topo.generator.schema import topology_schema

# What the resolver's helpers raise on a value of the wrong type; the schema reports those values.
BAD_VALUE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)
TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
              "number": "a number", "boolean": "true or false", "null": "empty"}


@dataclass
class Report:
    """The document under validation, the environment its `${VAR}` read, and what was found."""

    document: Document
    env: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


class Checker:
    def __init__(self, report: Report) -> None:
        self.report_to = report
        self.doc = report.document
        self.data: Any = report.document.data
        self.env = report.env

    # -- reporting -------------------------------------------------------------------------------

    def report(self, severity: Severity, span: Span, message: str, hint: str | None = None) -> None:
        self.report_to.diagnostics.append(Diagnostic(severity, self.doc.file, span.line, span.col, message, hint))

    def error(self, path: NodePath, message: str, hint: str | None = None, *, key: bool = False) -> None:
        span = self.doc.key_span(path) if key else self.doc.value_span(path)
        self.report("error", span, message, hint)

    def warning(self, path: NodePath, message: str, hint: str | None = None, *, key: bool = False) -> None:
        span = self.doc.key_span(path) if key else self.doc.value_span(path)
        self.report("warning", span, message, hint)

    def span_at(self, path: NodePath, offset: int) -> Span:
        """The place of character `offset` inside the string scalar at `path`, when it can be known."""
        span = self.doc.value_span(path)
        value = self.get(path)
        raw = self.doc.source[span.start:span.end]
        if not isinstance(value, str) or "\n" in raw:
            return span
        if span.style in (None, "") and raw == value:
            return Span(span.line, span.col + offset, span.start + offset, span.end)
        if span.style in ("'", '"') and raw[1:-1] == value:
            return Span(span.line, span.col + 1 + offset, span.start + 1 + offset, span.end)
        return span

    # -- data access -----------------------------------------------------------------------------

    def get(self, path: NodePath) -> Any:
        node = self.data
        for part in path:
            if isinstance(node, dict):
                if part in node:
                    node = node[part]
                elif isinstance(part, str) and part.isdigit() and int(part) in node:
                    node = node[int(part)]  # a chain id: an integer key in YAML, a string in paths
                else:  # other non-string keys (true, 1.5) are rare: compare as the paths do
                    node = next((value for key, value in node.items() if str(key) == part), None)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node

    def mapping(self, path: NodePath) -> dict[str, Any]:
        node = self.get(path)
        return {str(key): value for key, value in node.items()} if isinstance(node, dict) else {}

    def entries(self, path: NodePath) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, body) of a name-keyed section whose bodies are mappings."""
        for name, body in self.mapping(path).items():
            if isinstance(body, dict):
                yield name, {str(key): value for key, value in body.items()}


def display(path: NodePath) -> str:
    """`events."block.new".payload.hash`, `consumer_groups.analytics.subscribes[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            segment = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part) else f'"{part}"'
            text += f".{segment}" if text else segment
    return f"`{text}`" if text else "the top level"


def describe(value: Any) -> str:
    """How a value reads in a message: `the integer 3`, `the string `x``, `a list`."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string `{value}`"
    return f"the {type(value).__name__} `{value}`"


def suggest(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


@cache
def name_patterns() -> dict[str, re.Pattern[str]]:
    """The schema's patterns of the names every derived name is made of."""
    schema = topology_schema()
    defs = schema["$defs"]
    return {
        "topology": re.compile(str(schema["properties"]["name"]["pattern"])),
        "event": re.compile(str(defs["eventName"]["pattern"])),
        "group": re.compile(str(defs["groupName"]["pattern"])),
        "chain": re.compile(str(defs["chain"]["properties"]["name"]["pattern"])),
        "exchange": re.compile(str(defs["broker"]["properties"]["rabbitmq"]["properties"]["exchange"]["pattern"])),
    }


def is_name(kind: str, value: Any) -> bool:
    """Whether `value` is a well-formed name of `kind` (topology, event, group, chain, exchange)."""
    return isinstance(value, str) and name_patterns()[kind].fullmatch(value) is not None
