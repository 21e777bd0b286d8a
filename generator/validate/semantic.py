"""Semantic rules: what the schema cannot express.

Chains declared once with distinct names; subscriptions that reference declared events and the
chains those events are published on; `publishes` lists of declared events; key fields that
exist, are scalar and required; payload constraints that fit their field type; exactly-once
delivery only on Kafka; retry and dedup policies that make sense once merged with the defaults;
Kafka configs set one way. Once everything else is valid, events nobody consumes or produces are
warnings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import StringConstraints, TypeAdapter

from topo.core.durations import format_duration
from topo.core.model import Topology
from topo.core.names import CHAIN_ID, DEFAULT_DEDUP_STORE, DEFAULT_RETRY, MIN_INSYNC_REPLICAS
from topo.generator.document import NodePath
from topo.generator.emit.autoscaling import max_replicas
from topo.generator.emit.fieldtypes import python_name
from topo.generator.resolve import resolve, resolve_retry
from topo.generator.validate.checker import BAD_VALUE_ERRORS, Checker, display, is_name, suggest

NUMERIC_TYPES = ("integer", "number")
LENGTH_TYPES = ("string", "hex", "array")


class SemanticChecker(Checker):
    def run(self) -> dict[int, str]:
        """Checks every rule; returns the declared chains (id -> name) for the naming checks."""
        chains = self.check_chains()
        events = dict(self.entries(("events",)))
        for name, event in events.items():
            self.check_event(name, event, chains)
        self.check_groups(events, chains)
        self.check_defaults()
        return chains

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
        self.check_min_insync_replicas(name, path)

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
                           suggest(str(chain), [str(c) for c in declared]) or
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
                       suggest(key, fields) or f"use one of its fields: {', '.join(fields)}", key=not own)
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
        for config, setting in (("retention.ms", "retention"), ("cleanup.policy", "cleanup_policy"),
                                (MIN_INSYNC_REPLICAS, "min_insync_replicas")):
            layers = [("defaults",)] + ([owner] if owner else [])
            in_configs = [(*layer, "configs", config) for layer in layers
                          if config in self.mapping((*layer, "configs"))]
            as_setting = [(*layer, setting) for layer in layers if setting in self.mapping(layer)]
            if in_configs and as_setting and (owner is None or (owner in (p[:2] for p in in_configs + as_setting))):
                self.error(in_configs[-1], f"`configs.{config}` conflicts with `{setting}` at "
                           f"{display(as_setting[-1])}: set it one way",
                           f"use `{setting}:` and remove `{config}` from `configs`" if config == MIN_INSYNC_REPLICAS
                           else f"use `{setting}:`; keep `configs: {{{config}: ...}}` only for values `{setting}` "
                           "cannot express (e.g. retention.ms -1: unlimited)", key=True)


    def check_min_insync_replicas(self, name: str, event: NodePath) -> None:
        """An event's topics need at least `min_insync_replicas` replicas, or no acks=all write succeeds."""
        layers: list[NodePath] = [event, ("defaults",), ("broker", "kafka")]
        factor_at = next(((*layer, "replication_factor") for layer in layers
                          if "replication_factor" in self.mapping(layer)), None)
        factor = self.get(factor_at) if factor_at else 1
        candidates = [(*layer, "min_insync_replicas") for layer in layers]
        candidates[2:2] = [(*layer, "configs", MIN_INSYNC_REPLICAS) for layer in layers[:2]]
        where = next((path for path in candidates if self.get(path) is not None), None)
        if where is None:
            return
        value = self.get(where)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not (isinstance(value, int) and isinstance(factor, int)) or isinstance(value, bool) or value <= factor:
            return
        source = f"replication_factor at {display(factor_at)}" if factor_at else "the default replication_factor"
        self.error(where, f"min.insync.replicas {value} of event `{name}` is more than its {factor} replica(s) "
                   f"({source}): Kafka would refuse every write with acks=all",
                   f"set `min_insync_replicas` to at most {factor}, or raise `replication_factor` to {value} or more")

    # -- consumer groups --------------------------------------------------------------------------------

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
            self.check_publishes(path, events)
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
                           suggest(event_name, list(events)) or
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

    def check_publishes(self, group: NodePath, events: dict[str, dict[str, Any]]) -> None:
        """`publishes`: declared events, each once."""
        items = self.get((*group, "publishes"))
        if not isinstance(items, list):
            return
        seen: dict[str, int] = {}
        for index, event_name in enumerate(items):
            item_path: NodePath = (*group, "publishes", index)
            if not isinstance(event_name, str):
                continue
            if event_name not in events:
                if event_name in self.mapping(("events",)):
                    continue  # the event itself is invalid and reported there
                self.error(item_path, f"consumer group `{group[1]}` publishes unknown event `{event_name}`",
                           suggest(event_name, list(events)) or
                           f"declared events: {', '.join(events) or 'none'}")
                continue
            if event_name in seen:
                first = self.doc.value_span((*group, "publishes", seen[event_name]))
                self.error(item_path, f"consumer group `{group[1]}` publishes `{event_name}` twice",
                           f"remove this entry (the first is on line {first.line})")
                continue
            seen[event_name] = index

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
        store = merged.get("store", DEFAULT_DEDUP_STORE)
        if store == "sqlite" and "path" not in merged:
            self.error(where.get("store", layers[-1]), "the sqlite dedup store needs a `path`",
                       "add e.g. `path: \"${TOPO_STATE_DIR:-.topo-state}/<group>.sqlite\"`")
        if store == "postgres" and "dsn" not in merged:
            self.error(where.get("store", layers[-1]), "the postgres dedup store needs a `dsn`",
                       "add e.g. `dsn: \"${DATABASE_URL:-postgresql://topo:topo@127.0.0.1:5432/topo}\"`")
        if store == "postgres" and "dsn" in merged and "${" not in str(merged["dsn"]) and "@" in str(merged["dsn"]):
            self.error(where["dsn"], "the postgres dedup store's `dsn` holds credentials written into the topology",
                       "write it as `${DATABASE_URL}` (or `${DATABASE_URL:-...}` with a development default) "
                       "and set DATABASE_URL in the environment")
        for key, owner in (("path", "sqlite"), ("dsn", "postgres"), ("table", "postgres")):
            if store != owner and key in merged and key in self.mapping(layers[-1]):
                self.warning(where[key], f"`{key}` is ignored by the {store} dedup store",
                             f"remove it, or use `store: {owner}`", key=True)

    def check_defaults(self) -> None:
        self.check_retry(None)
        self.check_dedup(None)
        self.check_configs(None)


    # -- usage warnings ----------------------------------------------------------------------------------

    def check_sqlite_scale_out(self, model: Topology) -> None:
        """A SQLite store lives in one pod: a group its autoscaling runs in several pods needs a shared store."""
        # The dedup settings are read off the document: the projection the names derive from leaves them out.
        defaults = self.data.get("defaults")
        default_dedup = defaults.get("dedup") if isinstance(defaults, dict) else None
        groups = self.data.get("consumer_groups")
        where: NodePath
        for group in model.groups:
            body = groups.get(group.name) if isinstance(groups, dict) else None
            own = body.get("dedup") if isinstance(body, dict) else None
            if isinstance(own, dict) and "store" in own:
                store, where = own["store"], ("consumer_groups", group.name, "dedup", "store")
            elif isinstance(default_dedup, dict) and "store" in default_dedup:
                store, where = default_dedup["store"], ("defaults", "dedup", "store")
            else:
                continue
            replicas = max_replicas(model, group)
            if store != "sqlite" or replicas <= 1:
                continue
            self.warning(where,
                         f"group `{group.name}` keeps its dedup store in SQLite, but its autoscaling runs up to "
                         f"{replicas} replicas: each pod has its own file, so another pod handles an event again "
                         "after a rebalance",
                         "use `store: postgres` with `dsn: \"${DATABASE_URL}\"` (one store for every pod)")

    def check_usage(self) -> None:
        self.check_sqlite_scale_out(resolve(self.data))
        events = dict(self.entries(("events",)))
        consumed: set[str] = set()
        derived: set[str] = set()  # published by a group's handlers: the group is a producer
        for _group, body in self.entries(("consumer_groups",)):
            items = body.get("subscribes")
            for item in items if isinstance(items, list) else []:
                consumed.add(str(item.get("event")) if isinstance(item, dict) else str(item))
            published = body.get("publishes")
            derived.update(str(name) for name in (published if isinstance(published, list) else []))
        for name, event in events.items():
            if not is_name("event", name):
                continue  # reported as an invalid name
            if name not in consumed:
                self.warning(("events", name), f"no consumer group subscribes to event `{name}`",
                             "add it to a group's `subscribes`, or remove the event", key=True)
            if not event.get("producers") and name not in derived:
                self.warning(("events", name), f"event `{name}` has no producer",
                             "list the services that publish it (`producers: [service]`), or add it to a "
                             "consumer group's `publishes`", key=True)

