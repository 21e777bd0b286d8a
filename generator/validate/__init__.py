"""Validation of topology.yaml: every error and warning of a parsed document, each at its node.

One concern per module, all reporting into one list so a run shows every defect at once:
`schema` (the JSON Schema), `values` (`${VAR}` interpolation and connection settings),
`semantic` (the rules a schema cannot express) and `naming` (templates, and every name the
resolved model derives). The resolver (`topo.generator.resolve`) relies on a document that passes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from topo.generator.diagnostics import Diagnostic, ordered
from topo.generator.document import Document
from topo.generator.validate.checker import Report
from topo.generator.validate.naming import NameChecker
from topo.generator.validate.schema import SchemaChecker
from topo.generator.validate.semantic import SemanticChecker
from topo.generator.validate.values import ValueChecker

__all__ = ["validate"]


def validate(document: Document, env: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) of a parsed topology, sorted by position."""
    report = Report(document, os.environ if env is None else env)
    SchemaChecker(report).run()
    if isinstance(document.data, dict):
        ValueChecker(report).run()
        semantic = SemanticChecker(report)
        chains = semantic.run()
        NameChecker(report).run(chains)
        if not report.has_errors:
            # Who consumes what is only worth a warning once the groups themselves are valid.
            semantic.check_usage()
    return ordered(report.diagnostics)
