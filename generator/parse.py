"""Parses topology.yaml keeping the line and column of every node, so every error points at its place.

PyYAML composes the text into nodes that carry their marks; this module builds the plain Python
data from those nodes itself, recording a side table `path -> Span` for every value and every
mapping key. A path is a tuple of mapping keys (always as `str`, which is also how JSON Schema
sees them: chain id 138 is "138") and sequence indexes (`int`).

YAML silently lets a later duplicate key win; here a duplicate key is an error. Anchors, aliases
and merge keys (`<<: *base`) work as in YAML.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from topo.generator.diagnostics import Diagnostic, ordered
from topo.generator.document import Document, NodePath, Span

MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"
# A document whose aliases expand beyond this many nodes is refused ("billion laughs").
MAX_NODES = 2_000_000

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)




class _Builder:
    def __init__(self, file: str, source: str) -> None:
        self.document = Document(file=file, source=source, data=None)
        self.diagnostics: list[Diagnostic] = []
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()
        self.count = 0

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic("error", self.document.file, span.line, span.col, message, hint))

    def build(self, node: Node, path: NodePath) -> Any:
        span = _span(node)
        self.document.values[path] = span
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge(span)
        if isinstance(node, ScalarNode):
            try:
                return self.constructor.construct_object(node)
            except yaml.YAMLError as exc:
                self.error(span, f"cannot read this value: {_problem(exc)}",
                           "topology.yaml uses plain YAML values; remove the explicit tag")
                return None
        if id(node) in self.active:
            self.error(span, "this alias refers to a node that contains it (a recursive structure)",
                       "anchors and aliases may only repeat a finished node")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.check_tag(node, SEQ_TAG, span)
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self.check_tag(node, MAP_TAG, span)
                return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise TypeError(f"unexpected YAML node {node!r}")

    def check_tag(self, node: Node, expected: str, span: Span) -> None:
        if node.tag != expected:
            self.error(span, f"unsupported YAML tag `{node.tag}`", "remove the tag: topology.yaml uses plain YAML")

    def build_mapping(self, node: MappingNode, path: NodePath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        written: dict[tuple[type, Any], Span] = {}
        merged: list[tuple[Node, Node]] = []
        explicit: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merged.extend(self.merge_sources(value_node))
            else:
                explicit.append((key_node, value_node))
        # Lowest priority first: merged entries, then the keys written in the mapping itself.
        entries = [(k, v, False) for k, v in merged] + [(k, v, True) for k, v in explicit]
        for key_node, value_node, is_explicit in entries:
            key_span = _span(key_node)
            if not isinstance(key_node, ScalarNode):
                self.error(key_span, "a mapping key must be a plain scalar such as a name or a number",
                           "write the key as text, e.g. `block.new:`")
                continue
            try:
                key = self.constructor.construct_object(key_node)
            except yaml.YAMLError as exc:
                self.error(key_span, f"cannot read this key: {_problem(exc)}", "remove the explicit tag")
                continue
            identity = (type(key), key)
            if is_explicit:
                first = written.get(identity)
                if first is not None:
                    same = "" if key_node.value == str(key) else f" (read as `{key}`)"
                    self.error(key_span, f"duplicate key `{key_node.value}`{same}: it is already defined at "
                               f"line {first.line}",
                               "YAML would silently keep only the last one; merge the two entries or rename one")
                    continue
                written[identity] = key_span
            child = (*path, str(key))
            self.document.keys[child] = key_span
            result[key] = self.build(value_node, child)
        return result

    def merge_sources(self, value: Node, stack: frozenset[int] = frozenset()) -> list[tuple[Node, Node]]:
        """Entries a merge key brings in, lowest priority first (the first mapping listed wins)."""
        sources = value.value if isinstance(value, SequenceNode) else [value]
        pairs: list[tuple[Node, Node]] = []
        for source in reversed(sources):
            if id(source) in stack or id(source) in self.active:
                self.error(_span(source), "this merge refers to a mapping that contains it (a recursive structure)",
                           "anchors and aliases may only repeat a finished node")
                continue
            if not isinstance(source, MappingNode):
                self.error(_span(source), "a merge key `<<` takes a mapping or a list of mappings",
                           "write `<<: *anchor` where the anchor names a mapping")
                continue
            own = []
            for key_node, value_node in source.value:
                if key_node.tag == MERGE_TAG:
                    pairs.extend(self.merge_sources(value_node, stack | {id(source)}))
                else:
                    own.append((key_node, value_node))
            pairs.extend(own)
        return pairs


class _TooLarge(Exception):
    def __init__(self, span: Span) -> None:
        super().__init__("too many nodes")
        self.span = span


def _span(node: Node) -> Span:
    start, end = node.start_mark, node.end_mark
    style = node.style if isinstance(node, ScalarNode) else None
    return Span(start.line + 1, start.column + 1, start.index, end.index, style)


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return str(exc.problem or exc.context or "invalid YAML")
    return str(exc)


def _syntax_error(file: str, source: str, exc: yaml.YAMLError) -> Diagnostic:
    if isinstance(exc, yaml.reader.ReaderError):
        line = source.count("\n", 0, exc.position) + 1
        col = exc.position - (source.rfind("\n", 0, exc.position) + 1) + 1
        return Diagnostic("error", file, line, col, f"character {exc.character!r} is not allowed in YAML",
                          "remove the control character or write it as an escape in a double-quoted string")
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return Diagnostic("error", file, 1, 1, f"invalid YAML: {exc}", None)
    problem, context = str(exc.problem or "invalid YAML"), str(exc.context or "")
    mark, context_mark = exc.problem_mark, exc.context_mark
    hint = f"{context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1}" \
        if context and context_mark is not None else None
    if source[mark.index:mark.index + 1] == "\t":
        return Diagnostic("error", file, mark.line + 1, mark.column + 1,
                          "tab character: YAML indentation and separation must use spaces",
                          "replace the tab with spaces")
    if context_mark is not None and "flow" in context and ("expected ','" in problem or "end" in problem):
        # The parser notices a missing bracket only where the next token is; the bracket that
        # was opened and never closed is the place to fix.
        opener = "[" if "sequence" in context else "{"
        closer = "]" if opener == "[" else "}"
        return Diagnostic("error", file, context_mark.line + 1, context_mark.column + 1,
                          f"this `{opener}` is never closed",
                          f"add `{closer}` (or a missing `,`); the parser stopped at line {mark.line + 1}, "
                          f"column {mark.column + 1}: {problem}")
    if context_mark is not None and "quoted scalar" in context and "end of stream" in problem:
        return Diagnostic("error", file, context_mark.line + 1, context_mark.column + 1,
                          "this quoted string is never closed",
                          "add the closing quote; the parser reached the end of the file looking for it")
    if "expected a single document" in problem or "expected a single document" in context:
        return Diagnostic("error", file, mark.line + 1, mark.column + 1,
                          "a second YAML document starts here; topology.yaml holds exactly one",
                          "remove the `---` separator and merge the documents")
    return Diagnostic("error", file, mark.line + 1, mark.column + 1, f"invalid YAML: {problem}", hint)


def parse_text(source: str, file: str) -> tuple[Document | None, list[Diagnostic]]:
    """YAML text -> positional document; syntax errors and duplicate keys become diagnostics."""
    try:
        root = yaml.compose(source, Loader=_Loader)
    except yaml.YAMLError as exc:
        return None, [_syntax_error(file, source, exc)]
    if root is None:
        return None, [Diagnostic("error", file, 1, 1, "the topology file is empty",
                                 "start from the minimal topology in docs/topology.md: `version: 1`, `name:`, "
                                 "`chains:`, `events:`")]
    builder = _Builder(file, source)
    try:
        builder.document.data = builder.build(root, ())
    except _TooLarge as exc:
        builder.error(exc.span, f"the document expands to more than {MAX_NODES} nodes through its aliases",
                      "aliases that repeat aliases grow exponentially; write the repeated parts out")
    return builder.document, ordered(builder.diagnostics)


def parse(path: str | os.PathLike[str]) -> tuple[Document | None, list[Diagnostic]]:
    """A topology.yaml file -> positional document; an unreadable file is a diagnostic."""
    file = os.fspath(path)
    try:
        source = Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Diagnostic("error", file, 0, 0, f"the file is not UTF-8 text (byte {exc.start})",
                                 "save topology.yaml as UTF-8")]
    except OSError as exc:
        return None, [Diagnostic("error", file, 0, 0, f"cannot read the topology: {exc.strerror or exc}",
                                 "pass the path of a topology.yaml, e.g. `topo validate topology.yaml`")]
    return parse_text(source, file)
