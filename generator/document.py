"""A parsed YAML document: its plain data plus where each node was written.

The parser (`topo.generator.parse`) builds it, validation (`topo.generator.validate`) reads it to
point every diagnostic at its node. A path is a tuple of mapping keys (always as `str`, which is
also how JSON Schema sees them: chain id 138 is "138") and sequence indexes (`int`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NodePath = tuple[str | int, ...]


@dataclass(frozen=True)
class Span:
    line: int  # 1-based
    col: int  # 1-based
    start: int  # character offsets into the source, end exclusive
    end: int
    style: str | None = None  # scalar style: None (plain), "'", '"', "|", ">"


@dataclass
class Document:
    """The data of one YAML file plus where each of its nodes was written."""

    file: str
    source: str
    data: Any
    values: dict[NodePath, Span] = field(default_factory=dict)
    keys: dict[NodePath, Span] = field(default_factory=dict)

    def value_span(self, path: NodePath) -> Span:
        """Where the value at `path` was written, or its nearest written ancestor."""
        for length in range(len(path), -1, -1):
            span = self.values.get(path[:length])
            if span is not None:
                return span
        return Span(1, 1, 0, 0)

    def key_span(self, path: NodePath) -> Span:
        """Where the key naming `path` was written (the value's place for a sequence item or the root)."""
        return self.keys.get(path) or self.value_span(path)

    def raw(self, path: NodePath) -> str:
        span = self.values.get(path)
        return self.source[span.start:span.end] if span else ""
