"""Schema errors: topology.yaml against generator/schema/topology.schema.json, each at its node.

jsonschema's errors are rewritten for people: an unknown key points at the key with a
"did you mean", a wrong type says what YAML read and how to quote it, a `oneOf` reports the
branch meant for the kind of value written rather than every branch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema

from topo.generator.document import NodePath, Span
from topo.generator.schema import topology_schema
from topo.generator.validate.checker import TYPE_WORDS, Checker, describe, display, suggest

NAME_KINDS = {"events": "event type name", "consumer_groups": "consumer group name", "chains": "chain id",
              "payload": "payload field name", "configs": "Kafka topic config name"}


@cache
def _validator() -> Any:
    schema = topology_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    # `$ref` lookups dominate jsonschema's time; the schema has no recursion, so inline them.
    return jsonschema.Draft202012Validator(_inline_refs(schema, schema["$defs"]))


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            merged = dict(_inline_refs(defs[str(node["$ref"]).removeprefix("#/$defs/")], defs))
            merged.update({key: _inline_refs(value, defs) for key, value in node.items() if key != "$ref"})
            return merged
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node



def _jsonable(value: Any) -> Any:
    # JSON Schema sees every mapping key as a string (YAML chain ids are integers).
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _resolve_ref(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema and str(schema["$ref"]).startswith("#/$defs/"):
        merged = dict(topology_schema()["$defs"][str(schema["$ref"])[len("#/$defs/"):]])
        merged.update({key: value for key, value in schema.items() if key != "$ref"})
        schema = merged
    return schema


def _accepts_type(schema: Mapping[str, Any], instance: Any) -> bool:
    """Whether a oneOf branch is the one meant for this kind of value (mapping, string, ...)."""
    schema = _resolve_ref(schema)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return any(_is_type(instance, kind) for kind in types)
    if "enum" in schema:
        return any(type(value) is type(instance) for value in schema["enum"])
    return True


def _is_type(instance: Any, kind: str) -> bool:
    checks: dict[str, Any] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return bool(checks[kind](instance))


def _branch_words(schema: Mapping[str, Any]) -> str:
    schema = _resolve_ref(schema)
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return " or ".join(TYPE_WORDS.get(str(t), str(t)) for t in types)
    return "a valid value"



class SchemaChecker(Checker):
    def run(self) -> None:
        for error in _validator().iter_errors(_jsonable(self.data)):
            self.schema_error(error)

    def schema_error(self, error: Any) -> None:
        path: NodePath = tuple(error.absolute_path)
        kind: str = error.validator
        instance = error.instance
        schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
        custom = schema.get("errorMessage")
        if "propertyNames" in error.absolute_schema_path:
            what = NAME_KINDS.get(str(path[-1]) if path else "", "key")
            name_path = (*path, str(instance))
            if kind == "maxLength":
                self.error(name_path, f"{what} `{instance}` is longer than {error.validator_value} characters",
                           "choose a shorter name", key=True)
            else:
                self.error(name_path, f"invalid {what} `{instance}`", str(custom) if custom else None, key=True)
            return
        if isinstance(instance, str) and "${" in instance:
            return  # check_interpolation explains that `${...}` is not allowed here
        if kind == "pattern" and path[:1] == ("consumer_groups",) and "subscribes" in path \
                and instance in self.mapping(("events",)):
            return  # a subscription to an event whose name is invalid: reported once, at the event
        where = display(path)
        if kind == "additionalProperties" and error.validator_value is False:
            known = list(schema.get("properties", {}))
            for extra in instance:
                if extra not in known:
                    hint = suggest(str(extra), known) or (f"valid keys here: {', '.join(known)}" if known else None)
                    place = f"in {where}" if path else "at the top level"
                    self.error((*path, str(extra)), f"unknown key `{extra}` {place}", hint, key=True)
        elif kind == "required":
            properties = schema.get("properties", {})
            unknown = [str(key) for key in instance if key not in properties]
            for missing in error.validator_value:
                if missing in instance:
                    continue
                if difflib.get_close_matches(missing, unknown, n=1, cutoff=0.6):
                    continue  # a misspelling of it: reported once, as an unknown key with "did you mean"
                hint = properties.get(missing, {}).get("description")
                self.error(path, f"{where} is missing the required key `{missing}`",
                           f"add `{missing}:`" + (f" ({hint})" if hint else ""), key=True)
        elif kind in ("oneOf", "anyOf"):
            self.choice_error(error, path, where)
        elif kind == "type":
            self.type_error(path, where, instance, error.validator_value)
        elif kind == "enum":
            allowed = [str(v) for v in error.validator_value]
            hint = suggest(str(instance), allowed) if isinstance(instance, str) else None
            self.error(path, f"{where} is {describe(instance)}; expected one of: {', '.join(allowed)}",
                       hint or f"write one of: {', '.join(allowed)}")
        elif kind == "const":
            self.error(path, f"{where} must be {error.validator_value}, not {describe(instance)}",
                       f"write `{error.validator_value}`")
        elif kind == "pattern":
            self.error(path, f"{where}: `{instance}` is not valid", str(custom) if custom else
                       f"it must match {error.validator_value}")
        elif kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            words = {"minimum": "at least", "exclusiveMinimum": "greater than", "maximum": "at most",
                     "exclusiveMaximum": "less than"}[kind]
            self.error(path, f"{where} must be {words} {error.validator_value}, not {instance}",
                       self.range_hint(path, kind, error.validator_value))
        elif kind in ("minItems", "minProperties"):
            self.error(path, f"{where} must not be empty", "list at least one entry")
        elif kind in ("minLength", "maxLength"):
            words = "at least" if kind == "minLength" else "at most"
            self.error(path, f"{where} must be {words} {error.validator_value} characters long")
        else:
            self.error(path, f"{where}: {error.message}")

    def choice_error(self, error: Any, path: NodePath, where: str) -> None:
        branches: list[Mapping[str, Any]] = list(error.validator_value)
        for index, branch in enumerate(branches):
            if _accepts_type(branch, error.instance):
                sub_errors = [e for e in error.context if e.relative_schema_path and
                              e.relative_schema_path[0] == index]
                for sub in sub_errors:
                    self.schema_error(sub)
                if sub_errors:
                    return
        options = " or ".join(_branch_words(branch) for branch in branches)
        self.error(path, f"{where} is {describe(error.instance)}; expected {options}")

    def type_error(self, path: NodePath, where: str, instance: Any, expected: str | list[str]) -> None:
        kinds = expected if isinstance(expected, list) else [expected]
        words = " or ".join(TYPE_WORDS.get(kind, kind) for kind in kinds)
        raw = self.doc.raw(path)
        hint: str | None = None
        if "string" in kinds and not isinstance(instance, dict | list) and raw:
            hint = f'YAML reads `{raw}` as {describe(instance).split(" `")[0].removeprefix("the ")}; ' \
                   f'quote it: "{raw}"'
        elif instance is None and "object" in kinds:
            hint = "the value is empty: write its keys on the following lines, indented"
        elif isinstance(instance, str) and any(k in kinds for k in ("integer", "number", "boolean")):
            hint = f"remove the quotes around `{instance}`" if self.doc.values.get(path, Span(0, 0, 0, 0)).style \
                in ("'", '"') else None
        self.error(path, f"{where} must be {words}, not {describe(instance)}", hint)

    def range_hint(self, path: NodePath, kind: str, bound: Any) -> str | None:
        last = str(path[-1]) if path else ""
        hints = {
            "partitions": "every topic and group needs at least one partition",
            "replication_factor": "1 for a single broker; 3 is usual in production",
            "max_retries": "0 sends a failed event straight to the dead-letter destination",
            "multiplier": "1 keeps the delay constant; use backoff: fixed for that",
            "ratio": "a ratio such as 0.01 (1% of handled events failed)",
        }
        return hints.get(last)
