"""JSON text for generated files: canonical (sorted keys), indented, fast on large documents.

`json.dumps(indent=...)` falls back to the pure-Python encoder; topologies with thousands of topics
spend most of their generation time there, so pretty output goes through pydantic-core's encoder.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import pydantic_core


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def pretty(document: Any) -> str:
    """Indented JSON with sorted keys and a final newline (UTF-8, not \\u-escaped)."""
    return pydantic_core.to_json(_sorted(document), indent=2).decode() + "\n"


@lru_cache(maxsize=65536)
def quoted(text: str) -> str:
    """A JSON (and so YAML) string literal; names repeat across manifests, hence the cache."""
    return json.dumps(text)
