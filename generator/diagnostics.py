"""Diagnostics: what the loader and the validator report, rendered like a compiler's messages.

    topology.yaml:12:5: error: unknown key `consumer_group`
      hint: did you mean `consumer_groups`?
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    file: str
    line: int  # 1-based; 0 when the problem has no position (e.g. an unreadable file)
    col: int  # 1-based
    message: str
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self) -> str:
        place = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{place}: {self.severity}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int, int, str]:
    return (diagnostic.file, diagnostic.line, diagnostic.col, 0 if diagnostic.is_error else 1, diagnostic.message)


def ordered(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by position, without exact repeats (two checks may see the same defect)."""
    return sorted(set(diagnostics), key=sort_key)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def render_all(diagnostics: Iterable[Diagnostic]) -> str:
    items = ordered(diagnostics)
    errors = sum(1 for d in items if d.is_error)
    warnings = len(items) - errors
    lines = [d.render() for d in items]
    if items:
        lines.append(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


class TopologyError(Exception):
    """A topology that cannot be compiled; carries every diagnostic of the run."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = ordered(diagnostics)
        super().__init__(render_all(self.diagnostics))
