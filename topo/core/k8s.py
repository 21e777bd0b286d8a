"""Kubernetes resource names for broker objects whose own names are not valid there.

`metadata.name` must be a DNS-1123 label here (lowercase letters, digits and '-', at most 63,
alphanumeric at both ends); the broker name itself goes into the spec (`topicName`, `name`).
Mapping loses information (`block.new` and `block-new` both become `block-new`), so a name that
collides, or had to be shortened, gets a short hash of the original appended.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

MAX_LABEL = 63
HASH_LENGTH = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label or "x"


def _with_hash(label: str, original: str) -> str:
    head = label[: MAX_LABEL - HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{_digest(original)}" if head else _digest(original)


def resource_names(names: Iterable[str]) -> dict[str, str]:
    """Unique DNS-1123 labels for the given names (deterministic: depends only on the set)."""
    originals = list(dict.fromkeys(names))
    labels = {name: dns_label(name) for name in originals}
    counts = Counter(labels.values())
    result: dict[str, str] = {}
    for name in originals:
        label = labels[name]
        if counts[label] > 1 or len(label) > MAX_LABEL:
            label = _with_hash(label, name)
        result[name] = label
    return result


def label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value if len(value) <= MAX_LABEL else _with_hash(value.lower(), text)
