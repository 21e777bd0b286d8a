"""A Dockerfile read into stages of instructions, so a test can perform their equivalent.

There is no Docker engine on the test machines: tests/test_packaging.py reads the repository's
Dockerfile with this module and does what each COPY, RUN, ENV and WORKDIR step would do, in
folders that stand for the image's filesystem. Only the syntax the Dockerfile uses is read:
comments, parser directives, line continuations, `ARG`, `FROM ... AS name`, flags such as
`--from=stage`, JSON-array (exec form) arguments.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    words: tuple[str, ...]  # the arguments without flags (shell-split, ARGs expanded)
    flags: dict[str, str]  # e.g. {"from": "wheel"}
    text: str  # the arguments as written


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def steps(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, `\\` continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return lines


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def parse(path: Path, build_args: dict[str, str] | None = None) -> list[Stage]:
    stages: list[Stage] = []
    variables: dict[str, str] = {}
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            variables[name] = (build_args or {}).get(name, default)
            continue
        expanded = expand(rest, variables) if keyword not in {"RUN", "ENTRYPOINT", "CMD"} else rest
        words = json.loads(expanded) if expanded.startswith("[") else shlex.split(expanded)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        if keyword == "FROM":
            assert len(words) == 3 and words[1].upper() == "AS", f"FROM without a stage name: {line}"
            stages.append(Stage(name=words[2], base=words[0]))
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, tuple(words), flags, rest))
    return stages


def stage(stages: list[Stage], name: str) -> Stage:
    for candidate in stages:
        if candidate.name == name:
            return candidate
    raise AssertionError(f"the Dockerfile has no stage {name!r}: {[s.name for s in stages]}")
