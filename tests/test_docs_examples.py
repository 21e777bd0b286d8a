"""Every code example of README.md and docs/*.md runs as written.

Each fenced ```python block runs in a fresh interpreter (`python -`, the block on standard input)
with the repository root as the working directory, so `generated/` is the committed output; it must
exit 0, and a `runner.run(until=...)` whose condition is never met raises, so it fails the test.
An HTML comment on the line right before the fence changes that:

    <!-- example: fragment REASON -->  not a program on purpose (e.g. a signature): not run, by reason
    <!-- example: excerpt FILE -->     a verbatim part of FILE (a module of the repository), which is
                                      imported: the block runs where it lives
    <!-- example: kafka -->           needs a live Kafka: it runs in a copy of the reference topology
                                      renamed to the test's unique name (so topics and consumer groups
                                      are its own), generated and applied to the local Kafka first. The
                                      generated module's name follows the topology's, so the block's
                                      `explorer_events` is read as the copy's module.
    <!-- example: shell -->           on a ```sh block: every command runs, in a copy of topology.yaml,
                                      examples/ and generated/, and must exit 0 (commands that need no
                                      broker).

Unmarked shell, YAML and JSON blocks are illustrations and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_cleanup import delete_topology_leftovers
from tests.test_quick_tour import isolated_copy
from topo.core.names import events_module

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGES = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
MARKER = re.compile(r"^<!-- example: (?P<kind>[a-z]+)(?: (?P<argument>[^ ]+))?.*-->\s*$")
KINDS = ("fragment", "excerpt", "kafka", "shell")
TOPO = Path(sys.executable).with_name("topo")
REFERENCE_MODULE = "explorer_events"
RUN_TIMEOUT = 180.0


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    kind: str  # "" when unmarked
    argument: str
    code: str

    @property
    def place(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def examples_of(page: Path) -> list[Example]:
    """The fenced blocks of `page`, each with the marker of the line before its fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[index])
        if opening is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        found.append(Example(page, index + 1, opening.group(1), marker.group("kind") if marker else "",
                             (marker.group("argument") or "") if marker else "",
                             "\n".join(lines[index + 1:end]) + "\n"))
        index = end + 1
    return found


EXAMPLES = [example for page in PAGES for example in examples_of(page)]
PYTHON = [e for e in EXAMPLES if e.language == "python"]


def selected(kind: str, language: str = "python") -> list[Any]:
    return [pytest.param(e, id=e.place) for e in EXAMPLES if e.kind == kind and e.language == language]


def clean_environment(**extra: str) -> dict[str, str]:
    """The caller's environment without topo's own settings (the examples say what they use)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TOPO_")}
    return environment | {"PYTHONUNBUFFERED": "1"} | extra


def run_python(example: Example, code: str, folder: Path, environment: dict[str, str]) -> None:
    completed = subprocess.run([sys.executable, "-"], input=code, cwd=folder, env=environment, capture_output=True,
                               text=True, timeout=RUN_TIMEOUT, check=False)
    assert completed.returncode == 0, (f"{example.place}: the example exited {completed.returncode}\n"
                                       f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}")


def test_every_marker_is_known_and_precedes_a_fence() -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.startswith("<!-- example:"):
                continue
            marker = MARKER.match(line)
            assert marker is not None and marker.group("kind") in KINDS, (
                f"{page.relative_to(REPO_ROOT)}:{number}: unknown example marker {line!r} (known: {', '.join(KINDS)})")
            assert number < len(lines) and lines[number].startswith("```"), (
                f"{page.relative_to(REPO_ROOT)}:{number}: an example marker must be the line right before a fence")
    for example in EXAMPLES:
        if example.kind == "shell":
            assert example.language == "sh", f"{example.place}: `example: shell` marks a ```sh block"
        if example.kind in ("excerpt", "kafka"):
            assert example.language == "python", f"{example.place}: `example: {example.kind}` marks a ```python block"
        if example.kind in ("fragment", "excerpt"):
            assert example.argument, f"{example.place}: `example: {example.kind}` names its reason or file"


def test_the_docs_have_python_examples_that_run() -> None:
    assert len([e for e in PYTHON if e.kind in ("", "kafka")]) >= 2, "the docs' runnable Python examples were found"


@pytest.mark.parametrize("example", selected(""))
def test_python_example_runs_as_written(example: Example) -> None:
    run_python(example, example.code, REPO_ROOT, clean_environment())


@pytest.mark.parametrize("example", selected("excerpt"))
def test_excerpt_is_part_of_a_module_that_imports(example: Example) -> None:
    source = REPO_ROOT / example.argument
    assert source.is_file(), f"{example.place}: {example.argument} not found"
    assert example.code in source.read_text(encoding="utf-8"), f"{example.place}: the block differs from {source}"
    module = ".".join(source.relative_to(REPO_ROOT).with_suffix("").parts)
    run_python(example, f"import {module}\n", REPO_ROOT, clean_environment())


@pytest.fixture
def kafka_copy(tmp_path: Path, unique_name: str, kafka_bootstrap: str, kafka_admin: Any) -> Any:
    """The reference topology renamed to `unique_name`, generated and applied to Kafka; its topics and
    consumer groups are deleted afterwards."""
    isolated_copy(tmp_path, unique_name)
    environment = clean_environment(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TOPO_STATE_DIR=str(tmp_path / "state"))
    for command in (("generate", "-t", "topology.yaml", "-o", "generated"),
                    ("apply", "-t", "topology.yaml", "--broker", "kafka", "--yes")):
        completed = subprocess.run([str(TOPO), *command], cwd=tmp_path, env=environment, capture_output=True,
                                   text=True, timeout=RUN_TIMEOUT, check=False)
        assert completed.returncode == 0, f"topo {shlex.join(command)}: {completed.stdout}\n{completed.stderr}"
    yield tmp_path, environment
    delete_topology_leftovers(kafka_admin, unique_name)


@pytest.mark.parametrize("example", selected("kafka"))
def test_kafka_example_runs_on_the_local_kafka(example: Example, kafka_copy: Any, unique_name: str) -> None:
    folder, environment = kafka_copy
    run_python(example, example.code.replace(REFERENCE_MODULE, events_module(unique_name)), folder, environment)


@pytest.mark.parametrize("example", selected("shell", "sh"))
def test_shell_example_runs_as_written(example: Example, tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "topology.yaml", tmp_path / "topology.yaml")
    for folder in ("examples", "generated"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    commands = [words for line in example.code.splitlines() if (words := shlex.split(line, comments=True))]
    assert commands, f"{example.place}: no command in the block"
    for words in commands:
        assert words[0] == "topo", f"{example.place}: `example: shell` runs topo commands only, not {words[0]!r}"
        completed = subprocess.run([str(TOPO), *words[1:]], cwd=tmp_path, env=clean_environment(),
                                   capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        assert completed.returncode == 0, (f"{example.place}: `{shlex.join(words)}` exited {completed.returncode}\n"
                                           f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}")


def test_a_condition_never_met_fails_an_example(tmp_path: Path) -> None:
    """The guarantee the examples rely on: the testing block, its condition made unreachable, exits non-zero."""
    [testing] = [e for e in PYTHON if "MemoryTransport(topology)" in e.code and e.kind == ""]
    reachable = "until=lambda: runner.handled >= 1 and runner.in_flight == 0, timeout=5"
    assert reachable in testing.code, f"{testing.place}: the testing example waits for its handler"
    never = testing.code.replace(reachable, "until=lambda: runner.handled >= 2, timeout=0.5")
    completed = subprocess.run([sys.executable, "-"], input=never, cwd=REPO_ROOT, env=clean_environment(),
                               capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert completed.returncode != 0
    assert "UntilTimeout: consumer group notifications: " in completed.stderr, completed.stderr
    assert "still false after 0.5s (1 deliveries settled, 0 in flight)" in completed.stderr, completed.stderr
