"""The part of a partly invalid topology that the resolver can be given, to check the names it derives.

Names are checked on the resolved model, so they are exactly the names `topo generate` writes and
`topo apply` creates. A document with an error elsewhere (a payload field, an alert threshold)
still has names worth checking in the same run, so the resolver gets a projection of the
document: only the values names derive from, each kept when it is well formed and left out
otherwise. Everything else takes its default; where a left-out value would have given a name
(a broken naming template, a malformed exchange), the checks skip the name the default gives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from topo.core.model import Delivery
from topo.core.names import DEFAULT_TOPIC_NAMING
from topo.generator.resolve import resolve_retry
from topo.generator.validate.checker import BAD_VALUE_ERRORS, is_name

MAX_PARTITIONS = 100_000
# A retry policy that derives no retry topic or queue: stands in for one that cannot be read.
NO_RETRIES: dict[str, Any] = {"max_retries": 0}


def _mapping(value: Any) -> dict[str, Any]:
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else {}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PARTITIONS


def _readable_retry(*layers: Mapping[str, Any]) -> bool:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    try:
        resolve_retry(merged)
    except BAD_VALUE_ERRORS:
        return False
    return True


def resolvable_part(data: Any, templates: Mapping[str, str]) -> dict[str, Any] | None:
    """What the resolver may be given of `data`, or None when no name can be derived (a bad topology name).

    `templates` are the naming templates that passed their checks; a broken one is replaced by
    the default, and the names it would give are not checked.
    """
    if not isinstance(data, dict) or not is_name("topology", data.get("name")):
        return None
    defaults = _mapping(data.get("defaults"))
    default_retry = _mapping(defaults.get("retry"))
    if not _readable_retry(default_retry):
        default_retry = NO_RETRIES
    projected_defaults: dict[str, Any] = {"retry": default_retry}
    if isinstance(defaults.get("ordered"), bool):
        projected_defaults["ordered"] = defaults["ordered"]
    if defaults.get("delivery") in tuple(Delivery):
        projected_defaults["delivery"] = defaults["delivery"]
    chains = _chains(data.get("chains"))
    events = _events(data.get("events"), set(chains))
    return {
        "version": 1,
        "name": data["name"],
        "broker": {"rabbitmq": _rabbitmq(_mapping(_mapping(data.get("broker")).get("rabbitmq")))},
        "naming": {"topic": templates.get("topic", DEFAULT_TOPIC_NAMING),
                   "routing_key": templates.get("routing_key", DEFAULT_TOPIC_NAMING)},
        "chains": chains,
        "defaults": projected_defaults,
        "events": events,
        "consumer_groups": _groups(data.get("consumer_groups"), events, default_retry),
    }


def _rabbitmq(rabbit: dict[str, Any]) -> dict[str, Any]:
    projected: dict[str, Any] = {}
    if is_name("exchange", rabbit.get("exchange")):
        projected["exchange"] = rabbit["exchange"]
    if _count(rabbit.get("partitions")):
        projected["partitions"] = rabbit["partitions"]
    return projected


def _chains(raw: Any) -> dict[int, dict[str, Any]]:
    chains: dict[int, dict[str, Any]] = {}
    # The YAML mapping itself: `1:` and `"1":` are two keys there, one chain here (the first).
    for key, spec in (raw.items() if isinstance(raw, dict) else ()):
        if not re.fullmatch(r"[0-9]{1,19}", str(key)) or int(str(key)) in chains:
            continue
        name = spec.get("name") if isinstance(spec, dict) else None
        chains[int(str(key))] = {"name": name} if is_name("chain", name) else {}
    return chains


def _chain_ids(raw: Any, declared: set[int]) -> list[int]:
    return [c for c in raw if isinstance(c, int) and not isinstance(c, bool) and c in declared]


def _events(raw: Any, declared: set[int]) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for name, body in _mapping(raw).items():
        if not is_name("event", name) or not isinstance(body, dict):
            continue
        event: dict[str, Any] = {}
        if isinstance(body.get("chains"), list):
            event["chains"] = _chain_ids(body["chains"], declared)
        if isinstance(body.get("ordered"), bool):
            event["ordered"] = body["ordered"]
        events[name] = event
    return events


def _groups(raw: Any, events: Mapping[str, dict[str, Any]], default_retry: Mapping[str, Any]
            ) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for name, body in _mapping(raw).items():
        if not is_name("group", name) or not isinstance(body, dict):
            continue
        group: dict[str, Any] = {"subscribes": _subscriptions(body.get("subscribes"), events)}
        retry = _mapping(body.get("retry"))
        if retry:
            group["retry"] = retry if _readable_retry(default_retry, retry) else NO_RETRIES
        if _count(body.get("partitions")):
            group["partitions"] = body["partitions"]
        if body.get("delivery") in tuple(Delivery):
            group["delivery"] = body["delivery"]
        groups[name] = group
    return groups


def _subscriptions(raw: Any, events: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    subscriptions: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else ():
        event = item.get("event") if isinstance(item, dict) else item
        if not isinstance(event, str) or event not in events:
            continue
        subscription: dict[str, Any] = {"event": event}
        if isinstance(item, dict) and isinstance(item.get("chains"), list):
            # Chains the event is not published on select nothing, as resolve filters them.
            subscription["chains"] = [c for c in item["chains"] if isinstance(c, int) and not isinstance(c, bool)]
        subscriptions.append(subscription)
    return subscriptions
