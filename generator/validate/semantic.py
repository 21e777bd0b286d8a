"""Validation of topology.yaml: its JSON Schema, then the rules a schema cannot express.

Every diagnostic points at the node it is about (for an unknown key: the key), says what is wrong
and how to fix it. Checks are written to run on a partly invalid document, so that one run
reports every error; the resolver (`topo.generator.resolve`) relies on a document that passes.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Annotated, Any

import jsonschema
from pydantic import StringConstraints, TypeAdapter

from topo.core import interpolate
from topo.core.durations import format_duration
from topo.core.names import CHAIN_ID, DEFAULT_RETRY, DEFAULT_TOPIC_NAMING, NAMING_PLACEHOLDERS, class_name
from topo.generator.diagnostics import Diagnostic, Severity, ordered
from topo.generator.emit.fieldtypes import python_name
from topo.generator.load import Document, NodePath, Span
from topo.generator.resolve import resolve_retry
from topo.generator.schema import topology_schema

KAFKA_TOPIC_MAX = 249
RABBIT_NAME_MAX = 255  # bytes, for queues, exchanges and routing keys
KAFKA_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
TEMPLATE_LITERAL = re.compile(r"^[A-Za-z0-9._-]*$")
# Only connection settings may read the environment; any other value is part of the topology.
CONNECTION_KEYS = {
    ("broker", "kafka"): {"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
                          "sasl_password"},
    ("broker", "rabbitmq"): {"url", "management_url"},
}
RABBIT_DEFAULTS = {
    "url": "${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}",
    "management_url": "${RABBITMQ_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:15672}",
}
# What resolve's helpers raise on a value of the wrong type; the schema reports those values.
BAD_VALUE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")

NUMERIC_TYPES = ("integer", "number")
LENGTH_TYPES = ("string", "hex", "array")
TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
              "number": "a number", "boolean": "true or false", "null": "empty"}
NAME_KINDS = {"events": "event type name", "consumer_groups": "consumer group name", "chains": "chain id",
              "payload": "payload field name", "configs": "Kafka topic config name"}


def validate(document: Document, env: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) of a parsed topology, sorted by position."""
    checker = _Checker(document, os.environ if env is None else env)
    checker.run()
    return ordered(checker.diagnostics)


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


def display(path: NodePath) -> str:
    """`events."block.new".payload.hash`, `consumer_groups.analytics.subscribes[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            segment = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part) else f'"{part}"'
            text += f".{segment}" if text else segment
    return f"`{text}`" if text else "the top level"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string `{value}`"
    return f"the {type(value).__name__} `{value}`"


def _suggest(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


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


class _Checker:
    def __init__(self, document: Document, env: Mapping[str, str]) -> None:
        self.doc = document
        self.data: Any = document.data
        self.env = env
        self.diagnostics: list[Diagnostic] = []

    # -- reporting -------------------------------------------------------------------------------

    def report(self, severity: Severity, span: Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(severity, self.doc.file, span.line, span.col, message, hint))

    def error(self, path: NodePath, message: str, hint: str | None = None, *, key: bool = False) -> None:
        span = self.doc.key_span(path) if key else self.doc.value_span(path)
        self.report("error", span, message, hint)

    def warning(self, path: NodePath, message: str, hint: str | None = None, *, key: bool = False) -> None:
        span = self.doc.key_span(path) if key else self.doc.value_span(path)
        self.report("warning", span, message, hint)

    def span_at(self, path: NodePath, offset: int) -> Span:
        """The place of character `offset` inside the string scalar at `path`, when it can be known."""
        span = self.doc.value_span(path)
        value = self.get(path)
        raw = self.doc.source[span.start:span.end]
        if not isinstance(value, str) or "\n" in raw:
            return span
        if span.style in (None, "") and raw == value:
            return Span(span.line, span.col + offset, span.start + offset, span.end)
        if span.style in ("'", '"') and raw[1:-1] == value:
            return Span(span.line, span.col + 1 + offset, span.start + 1 + offset, span.end)
        return span

    # -- data access -----------------------------------------------------------------------------

    def get(self, path: NodePath) -> Any:
        node = self.data
        for part in path:
            if isinstance(node, dict):
                if part in node:
                    node = node[part]
                elif isinstance(part, str) and part.isdigit() and int(part) in node:
                    node = node[int(part)]  # a chain id: an integer key in YAML, a string in paths
                else:  # other non-string keys (true, 1.5) are rare: compare as the paths do
                    node = next((value for key, value in node.items() if str(key) == part), None)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node

    def mapping(self, path: NodePath) -> dict[str, Any]:
        node = self.get(path)
        return {str(key): value for key, value in node.items()} if isinstance(node, dict) else {}

    def entries(self, path: NodePath) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, body) of a name-keyed section whose bodies are mappings."""
        for name, body in self.mapping(path).items():
            if isinstance(body, dict):
                yield name, {str(key): value for key, value in body.items()}

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> None:
        self.check_schema()
        if not isinstance(self.data, dict):
            return
        self.check_interpolation((), self.data)
        self.check_connection_values()
        self.check_names()
        chains = self.check_chains()
        events = dict(self.entries(("events",)))
        for name, event in events.items():
            self.check_event(name, event, chains)
        self.check_class_names(events)
        self.check_groups(events, chains)
        self.check_defaults()
        templates = self.check_naming(chains)
        self.check_derived_names(events, chains, templates)
        if not any(d.is_error for d in self.diagnostics):
            # Who consumes what is only worth a warning once the groups themselves are valid.
            self.check_usage(events)

    # -- schema ----------------------------------------------------------------------------------

    def check_schema(self) -> None:
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
                    hint = _suggest(str(extra), known) or (f"valid keys here: {', '.join(known)}" if known else None)
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
            hint = _suggest(str(instance), allowed) if isinstance(instance, str) else None
            self.error(path, f"{where} is {_describe(instance)}; expected one of: {', '.join(allowed)}",
                       hint or f"write one of: {', '.join(allowed)}")
        elif kind == "const":
            self.error(path, f"{where} must be {error.validator_value}, not {_describe(instance)}",
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
        self.error(path, f"{where} is {_describe(error.instance)}; expected {options}")

    def type_error(self, path: NodePath, where: str, instance: Any, expected: str | list[str]) -> None:
        kinds = expected if isinstance(expected, list) else [expected]
        words = " or ".join(TYPE_WORDS.get(kind, kind) for kind in kinds)
        raw = self.doc.raw(path)
        hint: str | None = None
        if "string" in kinds and not isinstance(instance, dict | list) and raw:
            hint = f'YAML reads `{raw}` as {_describe(instance).split(" `")[0].removeprefix("the ")}; ' \
                   f'quote it: "{raw}"'
        elif instance is None and "object" in kinds:
            hint = "the value is empty: write its keys on the following lines, indented"
        elif isinstance(instance, str) and any(k in kinds for k in ("integer", "number", "boolean")):
            hint = f"remove the quotes around `{instance}`" if self.doc.values.get(path, Span(0, 0, 0, 0)).style \
                in ("'", '"') else None
        self.error(path, f"{where} must be {words}, not {_describe(instance)}", hint)

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

    # -- ${VAR} interpolation --------------------------------------------------------------------

    def interpolation_allowed(self, path: NodePath) -> bool:
        if len(path) == 3 and path[2] in CONNECTION_KEYS.get((str(path[0]), str(path[1])), ()):
            return True
        return len(path) >= 2 and path[-2:] == ("dedup", "path") and (
            (path[0] == "defaults" and len(path) == 3) or (path[0] == "consumer_groups" and len(path) == 4))

    def check_interpolation(self, path: NodePath, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                self.check_interpolation((*path, str(key)), value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self.check_interpolation((*path, index), value)
        elif isinstance(node, str) and "$" in node:
            self.check_references(path, node)

    def check_references(self, path: NodePath, text: str) -> None:
        escaped = text.replace("$$", "\0\0")
        start = escaped.find("${")
        if start < 0:
            return
        if not self.interpolation_allowed(path):
            self.report("error", self.span_at(path, start),
                        f"`${{...}}` is not allowed in {display(path)}: only broker connection settings and "
                        "dedup.path read the environment",
                        "write the value itself; `$${` writes a literal `${`")
            return
        if interpolate.malformed(text):
            bad = interpolate.MALFORMED.search(escaped)
            self.report("error", self.span_at(path, bad.start() if bad else start),
                        f"malformed `${{` reference in {display(path)}",
                        "write `${NAME}` or `${NAME:-default}`, NAME made of letters, digits and `_`; "
                        "`$${` is a literal `${`")
            return
        for match in interpolate.REFERENCE.finditer(text):
            if match.group(0) == "$$" or match.group("op"):
                continue
            name = match.group("name")
            if name not in self.env:
                self.report("error", self.span_at(path, match.start()),
                            f"environment variable {name} is not set and {display(path)} gives it no default",
                            f"export {name}=... before running topo, or write `${{{name}:-default}}`")

    def expanded(self, path: NodePath) -> str | None:
        value = self.get(path)
        if not isinstance(value, str) or interpolate.malformed(value):
            return None
        try:
            return interpolate.expand(value, self.env)
        except (interpolate.UnsetVariableError, ValueError):
            return None  # reported by check_references

    def check_connection_values(self) -> None:
        # Values are checked after expansion but never printed: they may hold credentials.
        kafka, rabbit = ("broker", "kafka"), ("broker", "rabbitmq")
        protocol = self.expanded((*kafka, "security_protocol"))
        if protocol is not None and protocol.upper() not in SECURITY_PROTOCOLS:
            self.error((*kafka, "security_protocol"), f"{display((*kafka, 'security_protocol'))} expands to an "
                       "unknown Kafka security protocol", f"use one of: {', '.join(SECURITY_PROTOCOLS)}")
        mechanism = self.expanded((*kafka, "sasl_mechanism"))
        if mechanism is not None and mechanism.upper() not in SASL_MECHANISMS:
            self.error((*kafka, "sasl_mechanism"), f"{display((*kafka, 'sasl_mechanism'))} expands to an "
                       "unknown SASL mechanism", f"use one of: {', '.join(SASL_MECHANISMS)}")
        servers = self.expanded((*kafka, "bootstrap_servers"))
        if servers is not None and not all(re.fullmatch(r"\S+:\d+", s.strip()) for s in servers.split(",")):
            self.error((*kafka, "bootstrap_servers"), f"{display((*kafka, 'bootstrap_servers'))} does not expand "
                       "to a comma-separated list of host:port", "e.g. `${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}`")
        for key, schemes in (("url", ("amqp", "amqps")), ("management_url", ("http", "https"))):
            url = self.expanded((*rabbit, key))
            if url is not None and ("://" not in url or url.split("://", 1)[0].lower() not in schemes):
                self.error((*rabbit, key), f"{display((*rabbit, key))} does not expand to a "
                           f"{' or '.join(s + '://' for s in schemes)} URL",
                           f"e.g. `{RABBIT_DEFAULTS[key]}`")

    # -- names -------------------------------------------------------------------------------------

    def check_names(self) -> None:
        name = self.get(("name",))
        if name == "amq":
            self.error(("name",), "the topology name `amq` would give RabbitMQ names starting with `amq.`, "
                       "which RabbitMQ reserves", "choose another name")
        exchange = self.get(("broker", "rabbitmq", "exchange"))
        if isinstance(exchange, str) and exchange.startswith("amq."):
            self.error(("broker", "rabbitmq", "exchange"), f"exchange `{exchange}`: names starting with `amq.` "
                       "are reserved by RabbitMQ", "choose another name, e.g. `<topology>.events`")

    def check_chains(self) -> dict[int, str]:
        """Declared chains: id -> name."""
        chains: dict[int, str] = {}
        names: dict[str, str] = {}
        raw = self.get(("chains",))
        # Iterate the YAML mapping itself: `1:` and `"1":` are two keys there, one chain here.
        for raw_key, spec in (raw.items() if isinstance(raw, dict) else ()):
            key = str(raw_key)
            if not re.fullmatch(r"[0-9]{1,19}", key):
                continue
            chain_id = int(key)
            if chain_id in chains:
                self.error(("chains", key), f"chain {chain_id} is declared twice", "remove one of the entries",
                           key=True)
                continue
            chain_name = spec.get("name", key) if isinstance(spec, dict) else key
            chains[chain_id] = str(chain_name)
            if str(chain_name) in names:
                self.error(("chains", key, "name") if isinstance(spec, dict) and "name" in spec else ("chains", key),
                           f"chain name `{chain_name}` is already used by chain {names[str(chain_name)]}",
                           "give every chain its own name: it can appear in topic names as {chain}")
            names[str(chain_name)] = key
        return chains

    # -- events --------------------------------------------------------------------------------------

    def check_event(self, name: str, event: dict[str, Any], chains: Mapping[int, str]) -> None:
        path: NodePath = ("events", name)
        self.check_unique_list((*path, "producers"), "producer")
        self.check_chain_list((*path, "chains"), chains, None)
        payload = self.mapping((*path, "payload"))
        for field_name, spec in payload.items():
            self.check_field((*path, "payload", field_name), field_name, spec)
            # `from` becomes the attribute `from_` (the JSON name stays its alias): it must not collide.
            attribute = python_name(field_name)
            if attribute != field_name and attribute in payload:
                self.error((*path, "payload", field_name),
                           f"payload field `{field_name}` is a Python keyword or pydantic attribute, so its "
                           f"generated attribute is `{attribute}`, which is also a field of this payload",
                           f"rename `{attribute}`", key=True)
        self.check_key(name, event, payload)
        self.check_configs(path)

    def check_unique_list(self, path: NodePath, what: str) -> None:
        items = self.get(path)
        if not isinstance(items, list):
            return
        seen: dict[Any, int] = {}
        for index, item in enumerate(items):
            if not isinstance(item, str | int) or isinstance(item, bool):
                continue
            if item in seen:
                self.error((*path, index), f"{what} `{item}` is listed twice in {display(path)}",
                           f"remove the repeated entry (first at line {self.doc.value_span((*path, seen[item])).line})")
            else:
                seen[item] = index

    def check_chain_list(self, path: NodePath, declared: Mapping[int, str], allowed: set[int] | None) -> None:
        """A `chains:` list: declared chains only (and only `allowed` ones, for a subscription)."""
        self.check_unique_list(path, "chain")
        items = self.get(path)
        if not isinstance(items, list):
            return
        for index, chain in enumerate(items):
            if not isinstance(chain, int) or isinstance(chain, bool):
                continue
            if chain not in declared:
                self.error((*path, index), f"chain {chain} is not declared in `chains`",
                           _suggest(str(chain), [str(c) for c in declared]) or
                           f"declared chains: {', '.join(str(c) for c in declared) or 'none'}")
            elif allowed is not None and chain not in allowed:
                self.error((*path, index), f"the event is not published on chain {chain}",
                           f"its chains are {', '.join(str(c) for c in sorted(allowed))}; "
                           "add the chain to the event's `chains` or drop it here")

    def check_field(self, path: NodePath, name: str, spec: Any) -> None:
        if isinstance(spec, str) or not isinstance(spec, dict):
            if name == CHAIN_ID and isinstance(spec, str) and spec != "integer":
                self.error(path, "`chain_id` is the event's chain id and must be of type integer",
                           "write `chain_id: integer`, or leave it out: every payload carries it implicitly")
            elif spec == "enum":
                self.error(path, f"enum field {display(path)} has no `values`",
                           f"write `{name}: {{type: enum, values: [a, b]}}`")
            elif spec == "array":
                self.error(path, f"array field {display(path)} has no `items` type",
                           f"write `{name}: {{type: array, items: string}}`")
            return
        spec = {str(k): v for k, v in spec.items()}
        kind = spec.get("type")
        if not isinstance(kind, str):
            return
        if name == CHAIN_ID and kind != "integer":
            self.error((*path, "type"), "`chain_id` is the event's chain id and must be of type integer",
                       "write `type: integer`, or leave the field out: every payload carries it implicitly")
        applies = {
            "minimum": NUMERIC_TYPES, "maximum": NUMERIC_TYPES,
            "min_length": LENGTH_TYPES, "max_length": LENGTH_TYPES,
            "pattern": ("string",), "values": ("enum",), "items": ("array",),
        }
        for constraint, types in applies.items():
            if constraint in spec and kind not in types:
                self.error((*path, constraint), f"`{constraint}` does not apply to a field of type `{kind}`",
                           f"`{constraint}` applies to {', '.join(types)} fields; remove it", key=True)
        if kind == "enum":
            self.check_enum_values(path, spec)
        if kind == "array":
            self.check_items(path, spec)
        for low, high in (("minimum", "maximum"), ("min_length", "max_length")):
            lo, hi = spec.get(low), spec.get(high)
            if isinstance(lo, int | float) and isinstance(hi, int | float) and not isinstance(lo, bool) \
                    and not isinstance(hi, bool) and lo > hi:
                self.error((*path, low), f"`{low}` ({lo}) is greater than `{high}` ({hi}): no value can satisfy both",
                           "swap them or fix one of the bounds", key=True)
        pattern = spec.get("pattern")
        if isinstance(pattern, str) and kind == "string":
            self.check_pattern((*path, "pattern"), pattern)

    def check_enum_values(self, path: NodePath, spec: dict[str, Any]) -> None:
        if "values" not in spec:
            self.error(path, f"enum field {display(path)} has no `values`",
                       "list its members: `values: [success, failed]`", key=True)
            return
        self.check_unique_list((*path, "values"), "enum value")

    def check_items(self, path: NodePath, spec: dict[str, Any]) -> None:
        items = spec.get("items")
        if items is None:
            self.error(path, f"array field {display(path)} has no `items` type",
                       "give the element type: `items: address` or `items: {type: enum, values: [a, b]}`", key=True)
            return
        item_path = (*path, "items")
        item_kind = items.get("type") if isinstance(items, dict) else items
        if item_kind == "array":
            self.error((*item_path, "type") if isinstance(items, dict) else item_path,
                       "arrays of arrays are not supported", "use an array of a scalar type or an enum")
        if isinstance(items, dict):
            if item_kind == "enum" and "values" not in items:
                self.error(item_path, "array of enum has no `values`",
                           "write `items: {type: enum, values: [a, b]}`")
            elif item_kind != "enum" and "values" in items:
                self.error((*item_path, "values"), f"`values` does not apply to items of type `{item_kind}`",
                           "remove it, or use `type: enum`", key=True)
            self.check_unique_list((*item_path, "values"), "enum value")
        elif item_kind == "enum":
            self.error(item_path, "array of enum has no `values`", "write `items: {type: enum, values: [a, b]}`")

    def check_pattern(self, path: NodePath, pattern: str) -> None:
        # The generated classes validate with pydantic's regex engine (Rust `regex`: no look-around,
        # no backreferences), so that engine is the one that must accept the pattern.
        try:
            TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])
        except Exception as exc:
            detail = next((line.strip() for line in str(exc).splitlines() if line.strip().startswith("error:")),
                          str(exc).splitlines()[-1] if str(exc) else "invalid")
            self.error(path, f"`{pattern}` is not a usable regular expression ({detail.removeprefix('error: ')})",
                       "use the common regex subset: no look-around and no backreferences")

    def check_key(self, name: str, event: dict[str, Any], payload: dict[str, Any]) -> None:
        path: NodePath = ("events", name)
        defaults = self.mapping(("defaults",))
        key = event.get("key", defaults.get("key", CHAIN_ID))
        if not isinstance(key, str):
            return
        own = "key" in event
        where: NodePath = (*path, "key") if own else path
        inherited = "" if own else " (from defaults.key)" if "key" in defaults else " (the default key)"
        if key == CHAIN_ID and CHAIN_ID not in payload:
            return
        if key not in payload:
            fields = [*payload, CHAIN_ID]
            self.error(where, f"key field `{key}`{inherited} of event `{name}` is not in its payload",
                       _suggest(key, fields) or f"use one of its fields: {', '.join(fields)}", key=not own)
            return
        spec = payload[key]
        kind = spec.get("type") if isinstance(spec, dict) else spec
        if kind == "array":
            self.error(where, f"key field `{key}`{inherited} of event `{name}` is an array; a partition key must "
                       "be a single value", "choose a scalar field as key", key=not own)
        if isinstance(spec, dict) and spec.get("required") is False:
            self.error(where, f"key field `{key}`{inherited} of event `{name}` is optional; every event needs a "
                       "key to be partitioned", f"make `{key}` required or choose a required field", key=not own)

    def check_configs(self, owner: NodePath | None) -> None:
        """`retention`/`cleanup_policy` and `configs: {retention.ms, cleanup.policy}` must not both apply."""
        where: NodePath = (*(owner or ("defaults",)), "configs", "retention.ms")
        value = self.get(where)
        if value is not None and not ((isinstance(value, int) and not isinstance(value, bool) and value >= -1)
                                      or (isinstance(value, str) and re.fullmatch(r"-1|[0-9]+", value))):
            self.error(where, f"{display(where)} must be a number of milliseconds, or -1 for unlimited retention",
                       "for a duration such as 7d, write `retention: 7d` instead")
        for config, setting in (("retention.ms", "retention"), ("cleanup.policy", "cleanup_policy")):
            layers = [("defaults",)] + ([owner] if owner else [])
            in_configs = [(*layer, "configs", config) for layer in layers
                          if config in self.mapping((*layer, "configs"))]
            as_setting = [(*layer, setting) for layer in layers if setting in self.mapping(layer)]
            if in_configs and as_setting and (owner is None or (owner in (p[:2] for p in in_configs + as_setting))):
                self.error(in_configs[-1], f"`configs.{config}` conflicts with `{setting}` at "
                           f"{display(as_setting[-1])}: set it one way",
                           f"use `{setting}:`; keep `configs: {{{config}: ...}}` only for values `{setting}` "
                           "cannot express (e.g. retention.ms -1: unlimited)", key=True)

    def check_class_names(self, events: dict[str, dict[str, Any]]) -> None:
        # Each event gets a payload class and an envelope class `<Class>Event` in one module.
        owners: dict[str, str] = {}
        for name in events:
            if not re.fullmatch(str(topology_schema()["$defs"]["eventName"]["pattern"]), name):
                continue
            for generated in (class_name(name), class_name(name) + "Event"):
                other = owners.get(generated)
                if other is not None:
                    self.error(("events", name), f"event `{name}` and event `{other}` would both generate the "
                               f"Python class `{generated}`", "rename one of them", key=True)
                    break
            owners.setdefault(class_name(name), name)
            owners.setdefault(class_name(name) + "Event", name)

    # -- consumer groups -------------------------------------------------------------------------------

    def delivery_error_rabbit(self, path: NodePath) -> None:
        self.error(path, "exactly-once delivery is only available on Kafka (it relies on Kafka transactions); "
                   "broker.kind is rabbitmq",
                   "use `delivery: at_least_once` with an idempotent handler (dedup drops redeliveries), "
                   "or `broker.kind: kafka`")

    def check_groups(self, events: dict[str, dict[str, Any]], chains: Mapping[int, str]) -> None:
        rabbit = self.get(("broker", "kind")) == "rabbitmq"
        if rabbit and self.get(("defaults", "delivery")) == "exactly_once":
            self.delivery_error_rabbit(("defaults", "delivery"))
        for group, body in self.entries(("consumer_groups",)):
            path: NodePath = ("consumer_groups", group)
            if rabbit and body.get("delivery") == "exactly_once":
                self.delivery_error_rabbit((*path, "delivery"))
            self.check_subscriptions(path, events, chains)
            self.check_retry(path)
            self.check_dedup(path)

    def check_subscriptions(self, group: NodePath, events: dict[str, dict[str, Any]],
                            chains: Mapping[int, str]) -> None:
        items = self.get((*group, "subscribes"))
        if not isinstance(items, list):
            return
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            item_path: NodePath = (*group, "subscribes", index)
            if isinstance(item, dict):
                event_name, name_path = item.get("event"), (*item_path, "event")
            else:
                event_name, name_path = item, item_path
            if not isinstance(event_name, str):
                continue
            if event_name not in events:
                if event_name in self.mapping(("events",)):
                    continue  # the event itself is invalid and reported there
                self.error(name_path, f"consumer group `{group[1]}` subscribes to unknown event `{event_name}`",
                           _suggest(event_name, list(events)) or
                           f"declared events: {', '.join(events) or 'none'}")
                continue
            if event_name in seen:
                first = self.doc.value_span((*group, "subscribes", seen[event_name]))
                self.error(name_path, f"consumer group `{group[1]}` subscribes to `{event_name}` twice",
                           f"merge this entry with the one on line {first.line}")
                continue
            seen[event_name] = index
            if isinstance(item, dict):
                event_chains = events[event_name].get("chains")
                allowed = {c for c in event_chains if isinstance(c, int)} if isinstance(event_chains, list) \
                    else set(chains)
                self.check_chain_list((*item_path, "chains"), chains, allowed)

    def check_retry(self, group: NodePath | None) -> None:
        """The retry policy a group ends up with (group over defaults over built-ins), or the defaults'."""
        layers: list[NodePath] = [("defaults", "retry")] + ([(*group, "retry")] if group else [])
        merged: dict[str, Any] = dict(DEFAULT_RETRY)
        where: dict[str, NodePath] = {}
        for layer in layers:
            for key, value in self.mapping(layer).items():
                merged[key] = value
                where[key] = (*layer, key)
        if group is not None and not self.mapping((*group, "retry")):
            return  # the defaults are checked on their own, once
        try:
            policy = resolve_retry(merged)
        except BAD_VALUE_ERRORS:
            return  # a value of the wrong type: the schema reported it
        if policy.max_retries and policy.initial_seconds < 0.001:
            self.error(where.get("initial", layers[-1]), "retry.initial must be at least 1ms",
                       "a zero delay retries in a hot loop; write e.g. `initial: 1s`")
        if policy.max_seconds < policy.initial_seconds and ("max" in where or "initial" in where):
            self.error(where.get("max", where.get("initial", layers[-1])),
                       f"retry.max ({format_duration(policy.max_seconds)}) is shorter than retry.initial "
                       f"({format_duration(policy.initial_seconds)})", "raise `max` or lower `initial`")
        if policy.backoff == "fixed" and "multiplier" in self.mapping(layers[-1]):
            self.warning((*layers[-1], "multiplier"), "`multiplier` has no effect with `backoff: fixed`",
                         "remove it, or use `backoff: exponential`", key=True)

    def check_dedup(self, group: NodePath | None) -> None:
        layers: list[NodePath] = [("defaults", "dedup")] + ([(*group, "dedup")] if group else [])
        if group is not None and not self.mapping((*group, "dedup")):
            return
        merged: dict[str, Any] = {}
        where: dict[str, NodePath] = {}
        for layer in layers:
            for key, value in self.mapping(layer).items():
                merged[key] = value
                where[key] = (*layer, key)
        store = merged.get("store", "memory")
        if store == "sqlite" and "path" not in merged:
            self.error(where.get("store", layers[-1]), "the sqlite dedup store needs a `path`",
                       "add e.g. `path: \"${TOPO_STATE_DIR:-.topo-state}/<group>.sqlite\"`")
        if store == "memory" and "path" in merged and "path" in self.mapping(layers[-1]):
            self.warning(where["path"], "`path` is ignored by the memory dedup store",
                         "remove it, or use `store: sqlite`", key=True)

    def check_defaults(self) -> None:
        self.check_retry(None)
        self.check_dedup(None)
        self.check_configs(None)

    # -- derived names ---------------------------------------------------------------------------------

    def check_naming(self, chains: Mapping[int, str]) -> dict[str, str]:
        """The usable naming templates (topic, routing_key), each reported when broken."""
        usable: dict[str, str] = {}
        naming = self.mapping(("naming",))
        topic = naming.get("topic", DEFAULT_TOPIC_NAMING)
        for key, template in (("topic", topic), ("routing_key", naming.get("routing_key", topic))):
            if not isinstance(template, str):
                continue
            own = key in naming
            path: NodePath = ("naming", key) if own else ("naming", "topic")
            if self.template_ok(path, template, chains, report=own or key == "topic"):
                usable[key] = template
        return usable

    def template_ok(self, path: NodePath, template: str, chains: Mapping[int, str], *, report: bool) -> bool:
        problems: list[tuple[str, str]] = []
        fields: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            problems.append((f"naming template {display(path)} has unbalanced braces ({exc})",
                             "write placeholders as `{event_type}`; `{{` and `}}` are literal braces"))
            parsed = []
        for literal, field, spec, conversion in parsed:
            if not TEMPLATE_LITERAL.match(literal):
                problems.append((f"naming template {display(path)} contains characters not allowed in topic "
                                 f"names: `{literal}`", "use only letters, digits, `.`, `-` and `_`"))
            if field is None:
                continue
            if field not in NAMING_PLACEHOLDERS or spec or conversion:
                shown = "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                problems.append((f"unknown placeholder `{shown}` in naming template {display(path)}",
                                 _suggest(field, NAMING_PLACEHOLDERS) or
                                 "placeholders: " + ", ".join("{" + p + "}" for p in NAMING_PLACEHOLDERS)))
            fields.add(field)
        if parsed and "event_type" not in fields:
            problems.append((f"naming template {display(path)} lacks `{{event_type}}`: every event type would "
                             "share one name", "include `{event_type}`, e.g. `{event_type}.{chain_id}`"))
        if parsed and len(chains) > 1 and not fields & {"chain_id", "chain"}:
            problems.append((f"naming template {display(path)} lacks `{{chain_id}}` or `{{chain}}`: the chains "
                             "of an event would share one name",
                             "include `{chain_id}`, e.g. `{event_type}.{chain_id}`"))
        if report:
            for message, hint in problems:
                self.error(path, message, hint)
        return not problems

    def check_derived_names(self, events: dict[str, dict[str, Any]], chains: Mapping[int, str],
                            templates: Mapping[str, str]) -> None:
        topology = self.get(("name",))
        if not isinstance(topology, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", topology):
            return
        event_pattern = str(topology_schema()["$defs"]["eventName"]["pattern"])
        # Kafka refuses topics that differ only by `.` versus `_` (their metric names collide).
        kafka_owner: dict[str, tuple[str, NodePath]] = {}
        routing_owner: dict[str, tuple[str, NodePath]] = {}

        def claim_topic(topic: str, owner: NodePath) -> None:
            problem = kafka_topic_problem(topic)
            if problem:
                self.error(owner, f"Kafka topic `{topic}` {problem}", "shorten the names it is made of", key=True)
                return
            normal = topic.replace(".", "_")
            previous = kafka_owner.get(normal)
            if previous and previous[1] != owner:
                same = "is also" if previous[0] == topic else f"collides with `{previous[0]}`, "
                self.error(owner, f"Kafka topic `{topic}` {same} derived from {display(previous[1])}"
                           + ("" if previous[0] == topic else " (Kafka treats `.` and `_` alike)"),
                           "rename one of them, or change the naming template", key=True)
            else:
                kafka_owner.setdefault(normal, (topic, owner))

        for name, event in events.items():
            if not re.fullmatch(event_pattern, name):
                continue
            owner: NodePath = ("events", name)
            event_chains = event.get("chains")
            ids = [c for c in event_chains if isinstance(c, int) and c in chains] \
                if isinstance(event_chains, list) else list(chains)
            for chain_id in dict.fromkeys(ids):
                values = {"event_type": name, "chain_id": str(chain_id), "chain": chains[chain_id],
                          "topology": topology}
                if "topic" in templates:
                    claim_topic(templates["topic"].format(**values), owner)
                if "routing_key" in templates:
                    key = templates["routing_key"].format(**values)
                    if len(key.encode()) > RABBIT_NAME_MAX:
                        self.error(owner, f"RabbitMQ routing key `{key}` is longer than {RABBIT_NAME_MAX} bytes",
                                   "shorten the event name or the naming template", key=True)
                    previous = routing_owner.get(key)
                    if previous and previous[1] != owner:
                        self.error(owner, f"RabbitMQ routing key `{key}` is also derived from "
                                   f"{display(previous[1])}", "rename one of them, or change the naming template",
                                   key=True)
                    routing_owner.setdefault(key, (key, owner))

        exchange = self.get(("broker", "rabbitmq", "exchange"))
        exchange = exchange if isinstance(exchange, str) else f"{topology}.events"
        for group, _body in self.entries(("consumer_groups",)):
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", group):
                continue
            path: NodePath = ("consumer_groups", group)
            prefix = f"{topology}.{group}"
            if prefix == exchange:
                self.error(path, f"consumer group `{group}` would get the exchange `{prefix}`, which is the "
                           "topology's exchange", "rename the group or set broker.rabbitmq.exchange", key=True)
            names = [f"{prefix}.dlq", *self.retry_names(path, prefix)]
            for topic in names:
                claim_topic(topic, path)
            queues = self.group_queue_count(path)
            longest = max([f"{prefix}.{queues - 1}", *names], key=lambda n: len(n.encode()))
            if len(longest.encode()) > RABBIT_NAME_MAX:
                self.error(path, f"RabbitMQ name `{longest}` is longer than {RABBIT_NAME_MAX} bytes",
                           "shorten the topology or group name", key=True)

    def retry_names(self, group: NodePath, prefix: str) -> list[str]:
        merged = {**DEFAULT_RETRY, **self.mapping(("defaults", "retry")), **self.mapping((*group, "retry"))}
        try:
            policy = resolve_retry(merged)
        except BAD_VALUE_ERRORS:
            return []
        return [f"{prefix}.retry.{format_duration(delay)}" for delay in sorted(set(policy.delays_seconds))]

    def group_queue_count(self, group: NodePath) -> int:
        for path in ((*group, "partitions"), ("broker", "rabbitmq", "partitions")):
            value = self.get(path)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
        return 3

    # -- usage warnings ----------------------------------------------------------------------------------

    def check_usage(self, events: dict[str, dict[str, Any]]) -> None:
        consumed: set[str] = set()
        for _group, body in self.entries(("consumer_groups",)):
            items = body.get("subscribes")
            for item in items if isinstance(items, list) else []:
                consumed.add(str(item.get("event")) if isinstance(item, dict) else str(item))
        event_pattern = str(topology_schema()["$defs"]["eventName"]["pattern"])
        for name, event in events.items():
            if not re.fullmatch(event_pattern, name):
                continue  # reported as an invalid name
            if name not in consumed:
                self.warning(("events", name), f"no consumer group subscribes to event `{name}`",
                             "add it to a group's `subscribes`, or remove the event", key=True)
            if not event.get("producers"):
                self.warning(("events", name), f"event `{name}` has no producer",
                             "list the services that publish it: `producers: [service]`", key=True)


def kafka_topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse this topic name, or None."""
    if topic in (".", ".."):
        return "cannot be `.` or `..`"
    if len(topic) > KAFKA_TOPIC_MAX:
        return f"is {len(topic)} characters long; Kafka allows {KAFKA_TOPIC_MAX}"
    if not KAFKA_TOPIC_CHARS.match(topic):
        return "may only contain letters, digits, `.`, `-` and `_`"
    return None

