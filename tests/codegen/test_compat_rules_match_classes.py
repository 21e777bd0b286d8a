"""The payload rules of `topo diff` checked against the generated classes themselves.

For every payload case of the compatibility corpus (tests/fixtures/compat/cases.yaml), the event
classes of the old and of the new topology are generated and imported; the changed field is given
each value of a pool (and left out), the other fields a valid value. A side classified safe must
read everything the other side's writer accepts (serialised as the publisher does: every declared
field, null when unset); a side classified breaking must refuse at least one of them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest
import yaml

from tests.generator.test_compat_corpus import BASE, CASES, patched
from topo.core.model import Topology
from topo.generator.emit import events as events_emitter
from topo.generator.resolve import resolve

ADDRESS = "0x" + "ab" * 20
VALID = {"order_id": "o-12", "amount": 5, "currency": "eur", "buyer": ADDRESS, "note": "hi", "sku": "ABC",
         "tags": ["a"], "verdict": "ok"}
POOL: list[Any] = ["o-12", "ABC", "ABCD", "hi", "0xabcd", ADDRESS, "x" * 150, 0, 1, -1, 5, 1.5, "eur", "usd", "gbp",
                   "ok", [], ["a"], [ADDRESS], None]
ABSENT = object()
PAYLOAD_RULES = {"field-added-optional", "field-added-required", "field-removed-optional", "field-removed-required",
                 "field-made-required", "field-made-optional", "field-type-widened", "field-type-narrowed",
                 "field-type-changed", "enum-values-added", "enum-values-removed"}


def compile_module(topology: Topology, folder: Path) -> ModuleType:
    (_, text), = events_emitter.emit(topology).items()
    target = folder / f"{topology.events_module}_{uuid.uuid4().hex}.py"
    target.write_text(text)
    spec = importlib.util.spec_from_file_location(target.stem, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def written(module: ModuleType, event: str, payload: dict[str, Any]) -> str | None:
    """The payload as a writer of `module` publishes it, or None when the writer refuses it."""
    payload_class = module.EVENT_TYPES[event]
    known = {info.alias or name for name, info in payload_class.model_fields.items()}
    if set(payload) - known:
        return None  # publishing refuses an unknown field
    try:
        return json.dumps(payload_class.model_validate(payload).model_dump(mode="json"))
    except pydantic.ValidationError:
        return None


def reads(module: ModuleType, event: str, text: str) -> bool:
    try:
        module.EVENT_TYPES[event].model_validate_json(text)
    except pydantic.ValidationError:
        return False
    return True


def observed(writer: ModuleType, reader: ModuleType, event: str, field: str) -> str:
    """`breaking` when some payload the writer publishes is refused by the reader, else `safe`."""
    base = {"chain_id": 1, **{name: value for name, value in VALID.items()
                              if name in writer.EVENT_TYPES[event].model_fields}}
    for value in [*POOL, ABSENT]:
        payload = {k: v for k, v in base.items() if k != field}
        if value is not ABSENT:
            payload[field] = value
        text = written(writer, event, payload)
        if text is not None and not reads(reader, event, text):
            return "breaking"
    return "safe"


PAYLOAD_CASES = [case for case in CASES if case["expect"] and {r for r, _, _ in case["expect"]} <= PAYLOAD_RULES]


@pytest.mark.parametrize("case", PAYLOAD_CASES, ids=[case["name"] for case in PAYLOAD_CASES])
def test_payload_rules_agree_with_the_generated_classes(case: dict[str, Any], tmp_path: Path) -> None:
    (event, settings), = case["patch"]["events"].items()
    field = next(iter(settings["payload"]))
    old = compile_module(resolve(BASE), tmp_path)
    new = compile_module(resolve(yaml.safe_load(yaml.safe_dump(patched(BASE, case["patch"])))), tmp_path)
    expected = {side: level for _, side, level in case["expect"]}
    assert observed(new, old, event, field) == expected["producers"], "new writers -> old readers"
    assert observed(old, new, event, field) == expected["consumers"], "old writers -> new readers"
