"""`${VAR}` / `${VAR:-default}` references in connection settings.

The generator only checks that every reference can be resolved; values are expanded when a
client connects, so that no secret ever reaches `generated/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

# `$${` is a literal `${`.
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:-|-)?(?P<default>[^}]*)?\}")
MALFORMED = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-|-|\}))")


@dataclass(frozen=True)
class Reference:
    name: str
    default: str | None  # None: no default given
    empty_counts_as_unset: bool  # `:-` (true) versus `-` (false), as in POSIX shells


class UnsetVariableError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"environment variable {self.name} is not set and has no default"


def references(text: str) -> list[Reference]:
    found = []
    for match in REFERENCE.finditer(text):
        if match.group(0) == "$$":
            continue
        op = match.group("op")
        default = match.group("default") if op else None
        found.append(Reference(match.group("name"), default, op == ":-"))
    return found


def malformed(text: str) -> bool:
    """True when the text holds a `${` that does not start a valid reference."""
    return MALFORMED.search(text.replace("$$", "")) is not None


def lookup(reference: Reference, env: Mapping[str, str]) -> str | None:
    value = env.get(reference.name)
    if value is None or (value == "" and reference.empty_counts_as_unset):
        return reference.default
    return value


def expand(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand every reference; raises UnsetVariableError for an unset one without default."""
    environment = os.environ if env is None else env

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        op = match.group("op")
        reference = Reference(match.group("name"), match.group("default") if op else None, op == ":-")
        value = lookup(reference, environment)
        if value is None:
            raise UnsetVariableError(reference.name)
        return value

    return REFERENCE.sub(substitute, text)
