"""A corpus of mistakes a user makes, each run through the real `topo` console script in a fresh folder:
each gives the documented exit code (docs/cli.md) and one line on stderr (one per field for a payload)
that names the place and the fix, and never a traceback.

Every mistake fails before a broker is contacted, so the cases run concurrently without brokers.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import generated, small_doc, write_yaml
from topo.cli.options import (
    ENV_DEBUG,
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_IMPOSSIBLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    command_line,
)
from topo.provision import plan

TOPO = Path(sys.executable).parent / "topo"  # the console script: sys.path[0] is its folder, not the cwd
HANDLERS = "def on_event(event):\n    print(event)\n"
Setup = Callable[[Path], None]


def reference_doc() -> dict[str, Any]:
    """small_doc with a handler module of the current folder and a bounded field."""
    doc = small_doc("mistakes", ("indexer",))
    doc["consumer_groups"]["indexer"]["handler"] = "handlers:on_event"
    doc["events"]["block.new"]["payload"] = {"block_number": {"type": "integer", "minimum": 0}}
    return doc


@dataclass(frozen=True)
class Mistake:
    name: str
    arguments: tuple[str, ...]
    facts: tuple[str, ...]  # each must appear in stderr
    setup: Setup = lambda folder: None
    exit_code: int = EXIT_ERROR
    lines: int = 1
    first_line_starts: str = "error: "
    environment: dict[str, str] = field(default_factory=dict)


def handlers(text: str) -> Setup:
    return lambda folder: (folder / "handlers.py").write_text(text, encoding="utf-8")


def package(name: str, module: str) -> Setup:
    def setup(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text("", encoding="utf-8")
        (folder / name / f"{module}.py").write_text(HANDLERS, encoding="utf-8")
    return setup


def edit_topology(change: Callable[[str], str]) -> Setup:
    def setup(folder: Path) -> None:
        source = folder / "topology.yaml"
        source.write_text(change(source.read_text(encoding="utf-8")), encoding="utf-8")
    return setup


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port some other process (here: the test) listens on."""
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def corpus(port: int) -> list[Mistake]:
    run = ("run", "--group", "indexer")
    publish = ("publish", "block.new", "--payload")
    return [
        Mistake("import fails inside the handler module", run,
                ("handlers imports web3_missing_here, which is not installed", "handlers.py:1",
                 "consumer_groups.indexer.handler"),
                handlers("import web3_missing_here\n" + HANDLERS)),
        Mistake("handler module missing", run,
                ("no module named 'handlers'", "current folder", "handlers.py", "PYTHONPATH"),
                lambda folder: (folder / "handlers.py").unlink()),
        Mistake("misspelt handler function", run,
                ("handlers has no function 'on_event'", "did you mean 'on_events'?"),
                handlers(HANDLERS.replace("on_event", "on_events"))),
        Mistake("syntax error in the handler module", run, ("handlers.py:3:", "syntax error", "handlers:on_event"),
                handlers(HANDLERS + "def broken(:\n"), first_line_starts="handlers.py:3:"),
        Mistake("handler module raises on import", run,
                ("importing handlers raised RuntimeError: no API key", "handlers.py:1", "fix the module"),
                handlers("raise RuntimeError('no API key')\n")),
        Mistake("--import of a missing module", (*run, "--import", "registrations"),
                ("--import registrations: no module named 'registrations'", "PYTHONPATH")),
        Mistake("misspelt module of a package", (*run, "--import", "registry.handler"),
                ("--import registry.handler: package registry (registry) has no module 'handler'",
                 "did you mean 'handlers'?"), package("registry", "handlers")),
        Mistake("metrics port in use", (*run, "--metrics-port", str(port)),
                (f":{port} for /metrics", "choose another --metrics-port, or 0 for any free port")),
        Mistake("payload is not JSON", (*publish, '{"block_number": 1'), ("--payload is not JSON", "column 19")),
        Mistake("payload is not an object", (*publish, "[1]"), ("--payload must be a JSON object",)),
        Mistake("payload fields invalid", (*publish, '{"block_number": -5, "chain_id": 1, "blocknumber": 2}'),
                ("error: payload.block_number: must be >= 0 (got -5)",
                 "error: payload.blocknumber: unknown field; did you mean 'block_number'? (got 2)"), lines=2),
        Mistake("payload field of the wrong type", (*publish, '{"block_number": "7", "chain_id": 1}'),
                ('payload.block_number: must be an integer (got "7")',)),
        Mistake("chain missing", (*publish, '{"block_number": 5}'),
                ("payload.chain_id: required; pass --chain ID or put chain_id in --payload",)),
        Mistake("chain not declared", (*publish, '{"block_number": 5}', "--chain", "137"),
                ("error: payload: chain 137 is not declared for block.new (1)",)),
        Mistake("unknown event", ("publish", "block.nwe", "--payload", "{}"),
                ("unknown event type 'block.nwe'", "did you mean 'block.new'?")),
        Mistake("unknown group", ("run", "--group", "indexr"),
                ("unknown consumer group 'indexr'", "did you mean 'indexer'?", "valid: indexer")),
        Mistake("stale generated/", run, ("generated is stale", "run `topo generate -t topology.yaml`"),
                edit_topology(lambda text: text.replace("retry:", "description: edited\n    retry:", 1))),
        Mistake("missing generated/", run, ("no generated output for topology.yaml", "run `topo generate"),
                lambda folder: shutil.rmtree(folder / "generated")),
        Mistake("validate given a compiled topology.json", ("validate", "-t", "generated/topology.json"),
                ("reads a topology.yaml, not a compiled topology.json", "pass -t topology.yaml")),
        Mistake("YAML syntax error in topology.yaml", run, ("error: topology.yaml:3:7: invalid YAML",),
                edit_topology(lambda text: text.replace("name: mistakes", "name: mistakes\n  oops: [", 1))),
        Mistake("unset ${VAR} without a default", ("plan",),
                ("TOPO_MISTAKE_UNSET is not set", "export TOPO_MISTAKE_UNSET=", "${TOPO_MISTAKE_UNSET:-default}"),
                edit_topology(lambda text: text.replace("kind: kafka", "kind: kafka\n  kafka:\n    "
                                                        "bootstrap_servers: ${TOPO_MISTAKE_UNSET}", 1))),
        Mistake("-t names a missing file", ("publish", "block.new", "--payload", "{}", "-t", "topolgy.yaml"),
                ("topolgy.yaml: no such file", "pass -t with the path of a topology.yaml")),
        Mistake("unknown option", ("plan", "--brokr", "kafka"),
                ("No such option '--brokr'", "Did you mean '--broker'?", "see `topo plan --help`")),
        Mistake("bad option value", (*run, "--broker", "memory"),
                ("'memory' is not one of 'kafka', 'rabbitmq'", "see `topo run --help`")),
        Mistake("unknown command", ("rnu",), ("No such command 'rnu'", "see `topo --help`")),
    ]


def attempt(mistake: Mistake, template: Path, workspace: Path) -> tuple[Mistake, subprocess.CompletedProcess[str]]:
    folder = workspace / mistake.name.replace(" ", "-").replace("/", "").replace("$", "")
    shutil.copytree(template, folder)
    mistake.setup(folder)
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TOPO_TOPOLOGY", "TOPO_BROKER", ENV_DEBUG, "TOPO_MISTAKE_UNSET")}
    done = subprocess.run([str(TOPO), *mistake.arguments], cwd=folder, capture_output=True, text=True, timeout=60,
                          env={**environment, **mistake.environment})
    return mistake, done


def test_each_mistake_gives_one_line_and_the_documented_exit_code(tmp_path: Path, busy_port: int) -> None:
    template = tmp_path / "template"
    write_yaml(template / "topology.yaml", reference_doc())
    (template / "handlers.py").write_text(HANDLERS, encoding="utf-8")
    generated(template / "topology.yaml", template / "generated")
    mistakes = corpus(busy_port)
    assert len(mistakes) >= 15
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda m: attempt(m, template, tmp_path), mistakes))
    failures = []
    for mistake, done in outcomes:
        lines = done.stderr.splitlines()
        problems = [f"exit {done.returncode}, expected {mistake.exit_code}"] if done.returncode != mistake.exit_code \
            else []
        problems += [f"{len(lines)} stderr lines, expected {mistake.lines}"] if len(lines) != mistake.lines else []
        problems += ["a traceback"] if "Traceback" in done.stderr else []
        problems += [f"missing {fact!r}" for fact in mistake.facts if fact not in done.stderr]
        problems += ["a library URL"] if "http" in done.stderr else []
        if lines and not lines[0].startswith(mistake.first_line_starts):
            problems.append(f"first line does not start with {mistake.first_line_starts!r}")
        if problems:
            failures.append(f"{mistake.name}: {'; '.join(problems)}\n    stderr: {done.stderr!r}")
    assert not failures, "\n".join(failures)


def test_the_exit_codes_are_the_provisioners(tmp_path: Path) -> None:
    """The CLI's table and topo plan/apply agree (docs/cli.md)."""
    assert (EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_IMPOSSIBLE) == (plan.EXIT_OK, plan.EXIT_ERROR, plan.EXIT_CHANGES,
                                                                  plan.EXIT_IMPOSSIBLE)
    assert EXIT_INTERRUPTED == 130


def explode() -> None:
    raise ZeroDivisionError("a bug")


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(ENV_DEBUG, raising=False)
    with pytest.raises(SystemExit) as exited:
        command_line(explode)
    assert exited.value.code == EXIT_ERROR
    assert capsys.readouterr().err == ("error: unexpected ZeroDivisionError: a bug; this is a bug in topo: rerun "
                                       "with TOPO_DEBUG=1 for the traceback and report it\n")
    caplog.set_level(logging.DEBUG)  # as `topo run --log-level debug` configures it
    with pytest.raises(ZeroDivisionError):  # the traceback, for the bug report
        command_line(explode)
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(ENV_DEBUG, "1")
    with pytest.raises(ZeroDivisionError):
        command_line(explode)


def test_ctrl_c_exits_130_and_a_cli_error_its_own_code(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    def refused() -> None:
        raise CliError("nothing was applied")

    for invoke, code, line in ((interrupted, EXIT_INTERRUPTED, "interrupted\n"),
                               (refused, EXIT_ERROR, "error: nothing was applied\n")):
        with pytest.raises(SystemExit) as exited:
            command_line(invoke)
        assert exited.value.code == code and capsys.readouterr().err == line
