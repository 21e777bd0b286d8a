"""YAML text for generated files: block style, in the given key order, fast on large documents.

PyYAML's emitter walks every node through Python events and spends tens of seconds on a document
with tens of thousands of channels; this writer only handles what emitters produce (dicts, lists,
str, int, float, bool, None). A string that is not a plain identifier or path is single-quoted, or
double-quoted with JSON's escapes (valid in YAML) when it needs escaping, so the text always loads
back as the same data (tests/generator/test_yamlout.py). A sub-tree that is the same object in
several places is rendered once.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Plain scalars: identifiers, dotted names and slash paths (never a YAML 1.1 bool/null word).
_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$/-]*")
_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# Line and paragraph separators, NEL and the byte-order mark break or vanish in YAML when raw.
_UNSAFE = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085", "\ufeff": "\\ufeff"}


def scalar_text(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _WORDS:
        return text
    if text.isprintable() and "'" not in text:
        return f"'{text}'"  # single-quoted: no escapes at all (isprintable excludes line separators, BOM, NEL)
    quoted = json.dumps(text, ensure_ascii=False)
    for raw, escaped in _UNSAFE.items():
        quoted = quoted.replace(raw, escaped)
    return quoted


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return scalar_text(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads `1e-09` as text: its floats need a dot.
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    raise TypeError(f"cannot write {type(value).__name__} as YAML: {value!r}")


class _Writer:
    """One dump: a sub-tree that appears several times (the same object) is rendered once per indent."""

    def __init__(self) -> None:
        self.rendered: dict[tuple[int, str], list[str]] = {}

    def lines(self, value: Any, indent: str, out: list[str]) -> None:
        key = (id(value), indent)
        done = self.rendered.get(key)
        if done is None:
            done = []
            _lines(self, value, indent, done)
            self.rendered[key] = done
        out.extend(done)


def _lines(writer: _Writer, value: Any, indent: str, out: list[str]) -> None:
    """Append the lines of a non-empty dict or list, each at `indent`."""
    if isinstance(value, dict):
        inner = indent + "  "
        for key, item in value.items():
            head = f"{indent}{scalar_text(str(key))}:"
            kind = type(item)
            if kind is dict or kind is list:
                if item:
                    out.append(head)
                    # A key's list items sit at the key's own indentation.
                    writer.lines(item, inner if kind is dict else indent, out)
                else:
                    out.append(head + (" {}" if kind is dict else " []"))
            else:
                out.append(f"{head} {_scalar(item)}")
    else:
        for item in value:
            kind = type(item)
            if (kind is dict or kind is list) and item:
                start = len(out)
                writer.lines(item, indent + "  ", out)
                out[start] = f"{indent}- {out[start][len(indent) + 2:]}"
            elif kind is dict or kind is list:
                out.append(f"{indent}- " + ("{}" if kind is dict else "[]"))
            else:
                out.append(f"{indent}- {_scalar(item)}")


def dump(document: dict[str, Any]) -> str:
    """The document as block YAML with a final newline; keys in insertion order."""
    out: list[str] = []
    _lines(_Writer(), document, "", out)
    return "\n".join(out) + "\n"
