"""The positional YAML loader: data, line/column of keys and values, duplicates, anchors."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_support import REFERENCE

from topo.generator import parse as parse_module
from topo.generator.diagnostics import Diagnostic, TopologyError, render_all
from topo.generator.load import load, load_topology
from topo.generator.parse import parse, parse_text


def test_values_and_keys_keep_their_line_and_column() -> None:
    document, diagnostics = parse_text("a:\n  b: [x, {c: 1}]\n  'd': \"two\"\n", "t.yaml")
    assert diagnostics == []
    assert document is not None
    assert document.data == {"a": {"b": ["x", {"c": 1}], "d": "two"}}
    assert (document.keys[("a", "b")].line, document.keys[("a", "b")].col) == (2, 3)
    assert (document.values[("a", "b", 1, "c")].line, document.values[("a", "b", 1, "c")].col) == (2, 14)
    assert (document.values[("a", "d")].line, document.values[("a", "d")].col) == (3, 8)
    assert document.raw(("a", "d")) == '"two"'


def test_integer_keys_stay_integers_in_data_and_strings_in_paths() -> None:
    document, _ = parse_text("chains:\n  138: {name: x}\n", "t.yaml")
    assert document is not None
    assert document.data == {"chains": {138: {"name": "x"}}}
    assert document.keys[("chains", "138")].line == 2


def test_duplicate_keys_are_errors_at_the_second_key() -> None:
    _, diagnostics = parse_text("a: 1\nb: 2\na: 3\n", "t.yaml")
    assert [(d.line, d.col, d.severity) for d in diagnostics] == [(3, 1, "error")]
    assert "duplicate key `a`" in diagnostics[0].message
    assert "line 1" in diagnostics[0].message


def test_anchors_aliases_and_merge_keys_work() -> None:
    text = "base: &base {x: 1, y: 2}\nother: &o {z: 0}\nm:\n  <<: [*base, *o]\n  y: 3\nlist: &l [1, 2]\nn: *l\n"
    document, diagnostics = parse_text(text, "t.yaml")
    assert diagnostics == []
    assert document is not None
    assert document.data["m"] == {"x": 1, "y": 3, "z": 0}
    assert document.data["n"] == [1, 2]
    assert document.values[("m", "x")].line == 1  # a merged value points at where it is written
    assert document.values[("m", "y")].line == 5


def test_a_key_merged_and_written_is_not_a_duplicate() -> None:
    _, diagnostics = parse_text("b: &b {x: 1}\nm: {<<: *b, x: 2}\n", "t.yaml")
    assert diagnostics == []


def test_recursive_aliases_are_reported() -> None:
    _, diagnostics = parse_text("a: &a [1, *a]\n", "t.yaml")
    assert len(diagnostics) == 1 and "recursive" in diagnostics[0].message


def test_alias_bombs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_module, "MAX_NODES", 1000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 5)]
    _, diagnostics = parse_text("\n".join(lines) + "\n", "t.yaml")
    assert any("more than 1000 nodes" in d.message for d in diagnostics)


def test_explicit_tags_are_refused() -> None:
    _, diagnostics = parse_text("a: !!python/object:os.system x\n", "t.yaml")
    assert diagnostics and diagnostics[0].line == 1


def test_syntax_errors_become_diagnostics() -> None:
    document, diagnostics = parse_text("a: [1, 2\nb: 3\n", "t.yaml")
    assert document is None
    assert [(d.line, d.col) for d in diagnostics] == [(1, 4)]
    assert "never closed" in diagnostics[0].message


def test_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    document, diagnostics = parse(tmp_path / "nope.yaml")
    assert document is None
    assert diagnostics[0].line == 0
    assert diagnostics[0].render().startswith(f"{tmp_path / 'nope.yaml'}: error: cannot read the topology")


def test_non_utf8_file_is_a_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    _, diagnostics = parse(path)
    assert "UTF-8" in diagnostics[0].message


def test_load_topology_returns_the_resolved_model() -> None:
    topology = load_topology(REFERENCE)
    assert topology.name == "explorer"
    assert [c.id for c in topology.chains] == [138, 1]
    assert topology.event_topic("block.new", 138).topic == "block.new.138"


def test_load_topology_raises_with_every_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: x\nchains: {1: {name: a}}\nevents:\n  a.b: {produsers: [p]}\n"
                    "consumer_groups:\n  g: {subscribes: [a.c]}\n")
    with pytest.raises(TopologyError) as raised:
        load_topology(path)
    errors = [d for d in raised.value.diagnostics if d.is_error]
    assert [(d.line, d.col) for d in errors] == [(5, 9), (7, 20)]
    assert "did you mean `producers`?" in str(raised.value)
    assert "did you mean `a.b`?" in str(raised.value)


def test_load_returns_warnings_with_the_topology(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: x\nchains: {1: {name: a}}\nevents:\n  a.b: {producers: [p]}\n")
    topology, diagnostics = load(path)
    assert topology is not None
    assert [d.severity for d in diagnostics] == ["warning"]
    assert "no consumer group subscribes" in diagnostics[0].message


def test_rendering_is_compiler_style() -> None:
    diagnostic = Diagnostic("error", "topology.yaml", 3, 7, "bad thing", "fix it")
    assert diagnostic.render() == "topology.yaml:3:7: error: bad thing\n  hint: fix it"
    later = Diagnostic("warning", "topology.yaml", 9, 1, "meh")
    assert render_all([later, diagnostic]).splitlines() == [
        "topology.yaml:3:7: error: bad thing", "  hint: fix it", "topology.yaml:9:1: warning: meh",
        "1 error, 1 warning"]
