"""`topo validate --against REF`: each event's `compatibility:` level, enforced as diagnostics
placed in the new topology.yaml (the changed field, or its nearest key that still exists)."""

from __future__ import annotations

from topo.core.model import Topology
from topo.generator.compat.report import compare, violations
from topo.generator.compat.rules import Side
from topo.generator.diagnostics import Diagnostic
from topo.generator.document import Document

DIRECTION = {Side.CONSUMERS: "events old producers wrote, read by the new classes",
             Side.PRODUCERS: "events new producers write, read by the old classes"}


def compatibility_diagnostics(document: Document, old: Topology, new: Topology, ref: str) -> list[Diagnostic]:
    """One error per payload change an event's compatibility level forbids, compared with `ref`."""
    found: list[Diagnostic] = []
    for violation in violations(compare(old, new), new):
        change = violation.change
        span = document.key_span(change.path)
        found.append(Diagnostic(
            "error", document.file, span.line, span.col,
            f"event {change.event}: {change.message} since {ref} breaks its compatibility level "
            f"`{violation.level.value}` ({DIRECTION[change.side]}; rule {change.rule})",
            f"{change.fix}; or set `compatibility: none` on the event to accept the break (docs/compatibility.md)"))
    return found
