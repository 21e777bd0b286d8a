"""topology.yaml -> resolved model: parse, validate, then resolve a document that passed.

The one place that chains the three steps, so the parser and the validator need not know each
other; `topo generate`, `topo validate` and every command that reads a topology.yaml come here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from topo.core.model import SourceFile, Topology
from topo.generator.diagnostics import Diagnostic, TopologyError, has_errors, ordered
from topo.generator.document import Document
from topo.generator.parse import parse, parse_text
from topo.generator.resolve import resolve
from topo.generator.validate import validate


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None
         ) -> tuple[Topology | None, list[Diagnostic]]:
    """Parse, validate and resolve: the topology (None on any error) and every diagnostic."""
    document, diagnostics = parse(path)
    topology, diagnostics = compile_document(document, diagnostics, env)
    return (None if topology is None else topology.model_copy(update={"source": source_file(path)})), diagnostics


def load_text(source: str, file: str, env: Mapping[str, str] | None = None
              ) -> tuple[Topology | None, list[Diagnostic]]:
    """The same from text, e.g. a topology.yaml as another git commit has it; `file` names it in
    diagnostics (`REF:topology.yaml`)."""
    return compile_document(*parse_text(source, file), env)


def compile_document(document: Document | None, diagnostics: list[Diagnostic],
                     env: Mapping[str, str] | None) -> tuple[Topology | None, list[Diagnostic]]:
    if document is None:
        return None, diagnostics
    diagnostics = ordered([*diagnostics, *validate(document, env)])
    if has_errors(diagnostics):
        return None, diagnostics
    try:
        topology = resolve(document.data)
    except Exception as exc:  # a validated document must resolve: anything else is a topo bug
        return None, [*diagnostics, Diagnostic(
            "error", document.file, 0, 0, f"internal error while resolving the topology: {exc!r}",
            "this is a bug in topo's validator (it accepted what the resolver cannot handle); please report it")]
    return topology, diagnostics


def source_file(path: str | os.PathLike[str]) -> SourceFile:
    """The record of `path` in the compiled topology: its name (output must not depend on where
    the repository is) and the hash a stale-output check compares."""
    file = Path(path)
    return SourceFile(file=file.name, sha256=hashlib.sha256(file.read_bytes()).hexdigest())


def load_topology(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Topology:
    """The resolved topology of a topology.yaml; raises TopologyError carrying every diagnostic."""
    topology, diagnostics = load(path, env)
    if topology is None:
        raise TopologyError(diagnostics)
    return topology
