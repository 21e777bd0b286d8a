"""generator/yamlout.py: the text loads back (PyYAML, YAML 1.1) as exactly the data written."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from topo.generator.yamlout import dump, scalar_text

TRICKY = ["", " ", "yes", "No", "ON", "off", "y", "N", "true", "False", "null", "Null", "~", "1", "-1", "0x10", "1e3",
          ".5", "1_000", "0o7", "12:30", "2024-01-01", "#comment", "a #b", "a: b", "a:b", "- a", "-", "?", "? a",
          "!tag", "&anchor", "*alias", "|", ">", "%2F", "@x", "`x`", "'quoted'", '"double"', "it's", "back\\slash",
          "tab\there", "line\nbreak", "trailing ", " leading", "ünïcødé", "emoji 😀", "sep\u2028line", "para\u2029x",
          "nel\u0085x", "bom\ufeffx", "bell\x07", "{braces}", "[list]", "a,b", "$ref", "#/channels/a~1b",
          "x-topo-key", "retention.ms", "kafka.block.new.138", "/{vhost}", "{host}", "=", "<<"]


def test_every_tricky_string_round_trips_as_value_and_as_key() -> None:
    document = {"values": TRICKY, "keys": {text: text for text in TRICKY}}
    assert yaml.safe_load(dump(document)) == document


@pytest.mark.parametrize("value", [
    {"empty_dict": {}, "empty_list": [], "none": None, "t": True, "f": False, "i": 0, "neg": -7, "f1": 1.5,
     "big": 2**70, "small": 1e-9, "huge": 2.5e20, "negative_small": -1e-5, "whole": 5.0},
    {"lists": [[1, [2, []]], [{}], [{"a": [{"b": {}}]}], [None, True, "x"]]},
    {"deep": {"a": {"b": {"c": [{"d": 1, "e": [1, 2]}, {"f": {"g": "h"}}]}}}},
])
def test_nested_structures_round_trip(value: dict[str, Any]) -> None:
    assert yaml.safe_load(dump(value)) == value


def test_shared_objects_are_written_out_in_full_at_every_place() -> None:
    shared = {"servers": [{"$ref": "#/servers/kafka"}], "n": 1}
    document = {"a": shared, "b": {"inner": shared}, "c": [shared, shared]}
    text = dump(document)
    assert "&" not in text and "*" not in text  # no anchors or aliases
    assert yaml.safe_load(text) == document


def test_identifiers_stay_plain_and_the_rest_is_quoted() -> None:
    assert [scalar_text(t) for t in ("address", "block.new", "x-topo-key", "$ref", "a/b")] == [
        "address", "block.new", "x-topo-key", "$ref", "a/b"]
    assert scalar_text("yes") == "'yes'"
    assert scalar_text("#/components/messages/a") == "'#/components/messages/a'"
    assert scalar_text("line\nbreak") == '"line\\nbreak"'


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot write set"):
        dump({"a": {1, 2}})
