"""grafana/: an overview dashboard, one dashboard per consumer group, and the provisioning files.

Dashboards are Grafana JSON (schemaVersion 39), built as data here and written with sorted keys,
so the output is byte-identical for the same topology; panel ids follow panel order. Every
panel has a PromQL query over names the runtime or the lag monitor exports, and a unit. Each
dashboard has the variables `datasource` (any Prometheus), `chain` and `group`; every query
filters on the fixed `topology="<name>"` label, so topologies sharing a Prometheus (and group
names) never mix.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from topo.core import metric_names as M
from topo.core.metric_names import (
    CONSUMED,
    DEAD_LETTERED,
    FAILED,
    HANDLER_DURATION,
    IN_FLIGHT,
    LAST_PROGRESS,
    LATENCY,
    PAUSED_PARTITIONS,
    PUBLISH_FAILED,
    PUBLISHED,
    RETRIED,
)
from topo.core.model import BrokerKind, ConsumerGroup, Topology
from topo.generator.render import render

SCHEMA_VERSION = 39
DASHBOARDS_DIR = "grafana/dashboards"
PROVISIONING_DIR = "grafana/provisioning"
# Where the provisioning file expects the dashboards inside the Grafana container.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "timeseries" or "stat"
    unit: str
    queries: tuple[tuple[str, str], ...]  # (expr, legend)
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[float, ...] = ()  # drawn as red lines / stat colours
    max: float | None = None


def total(name: str) -> str:
    return f"{name}_total"


def uid(*parts: str) -> str:
    """Grafana uids are at most 40 characters: readable prefix, hashed when longer."""
    text = re.sub(r"[^a-zA-Z0-9_-]", "-", "-".join(("topo", *parts)))
    if len(text) <= 40:
        return text
    return f"{text[:31]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def matcher(**labels: str) -> str:
    """Label matchers; values starting with "=~" are regex matches on a variable."""
    items = []
    for key, value in labels.items():
        if value.startswith("=~"):
            items.append(f"{key}=~{json.dumps(value[2:])}")
        elif value.startswith("!="):
            items.append(f"{key}!={json.dumps(value[2:])}")
        else:
            items.append(f"{key}={json.dumps(value)}")
    return "{" + ", ".join(items) + "}"


GROUP = "=~$group"
CHAIN = "=~$chain"


class DashboardBuilder:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.kafka = topology.broker is BrokerKind.KAFKA

    def m(self, **labels: str) -> str:
        """Matchers of this topology's series: every runtime and monitor series has `topology`."""
        return matcher(topology=self.topology.name, **labels)

    # ------------------------------------------------------------------ variables

    def variables(self, groups: tuple[ConsumerGroup, ...], fixed_group: bool) -> list[dict[str, Any]]:
        chains = [(f"{c.name} ({c.id})", str(c.id)) for c in self.topology.chains]
        group_options = [(g.name, g.name) for g in groups]
        return [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            self.custom("chain", "Chain", chains, include_all=True),
            self.custom("group", "Consumer group", group_options, include_all=not fixed_group,
                        hide=2 if fixed_group else 0),
        ]

    @staticmethod
    def custom(name: str, label: str, options: list[tuple[str, str]], *, include_all: bool,
               hide: int = 0) -> dict[str, Any]:
        values = [value for _, value in options]
        current = ({"selected": True, "text": ["All"], "value": ["$__all"]} if include_all
                   else {"selected": True, "text": options[0][0], "value": options[0][1]})
        return {
            "name": name, "label": label, "type": "custom", "hide": hide, "multi": include_all,
            "includeAll": include_all, "allValue": "|".join(re.escape(v) for v in values) if include_all else None,
            "query": ",".join(f"{text} : {value}" for text, value in options),
            "current": current,
            "options": ([{"selected": True, "text": "All", "value": "$__all"}] if include_all else [])
            + [{"selected": not include_all and i == 0, "text": text, "value": value}
               for i, (text, value) in enumerate(options)],
        }

    # ------------------------------------------------------------------ panels

    def health(self, group: str) -> list[Panel]:
        g = self.m(group=group)
        return [
            Panel("Consumer groups without members", "stat", "none",
                  ((f"count({M.GROUP_MEMBERS}{g} == 0) or vector(0)", "down"),), width=5, height=4,
                  thresholds=(1,), description="Groups with no consumer on the broker (lag monitor)."),
            Panel("Stalled groups", "stat", "none", ((f"sum({M.GROUP_STALLED}{g}) or vector(0)", "stalled"),),
                  width=5, height=4, thresholds=(1,),
                  description="Lag and no progress over alerts.stalled.for (lag monitor)."),
            Panel("Slow groups", "stat", "none", ((f"sum({M.GROUP_SLOW}{g}) or vector(0)", "slow"),), width=5,
                  height=4, thresholds=(1,), description="Consuming, but lag never fell (lag monitor)."),
            Panel("Firing alerts", "stat", "none",
                  (("count(ALERTS" + self.m(alertstate="firing", group=group)
                    + ") or vector(0)", "alerts"),), width=5, height=4, thresholds=(1,)),
            Panel("Lag monitor up", "stat", "bool_yes_no", ((f"min({M.MONITOR_UP}{self.m()})", "up"),), width=4,
                  height=4),
        ]

    def lag_panels(self, by: str, legend: str, group: str, group_alerts: ConsumerGroup | None,
                   suffix: str = "") -> list[Panel]:
        events_threshold = (float(group_alerts.alerts.lag_events),) if group_alerts else ()
        seconds_threshold = (float(group_alerts.alerts.lag_seconds),) if group_alerts else ()
        if self.kafka:
            sel = self.m(group=group, chain_id=CHAIN, event_type="!=")
            lag = f"sum by ({by}) ({M.KAFKA_GROUP_LAG}{sel})"
            seconds = f"max by ({by}) ({M.KAFKA_GROUP_LAG_SECONDS}{sel})"
        else:
            sel = self.m(group=group, kind="events")
            lag = f"sum by ({by}) ({M.RABBIT_QUEUE_LAG}{sel})"
            seconds = f"max by ({by}) ({M.RABBIT_QUEUE_LAG_SECONDS}{sel})"
        return [
            Panel(f"Consumer lag (events){suffix}", "timeseries", "short", ((lag, legend),),
                  thresholds=events_threshold, description="Events not yet consumed, from the broker (lag monitor)."),
            Panel(f"Consumer lag (seconds){suffix}", "timeseries", "s", ((seconds, legend),),
                  thresholds=seconds_threshold, description="Age of the oldest unconsumed event."),
        ]

    def failure_panels(self, by: str, legend: str, group: str) -> list[Panel]:
        sel = self.m(group=group, chain_id=CHAIN)
        failed = f"sum by ({by}) (rate({total(FAILED)}{sel}[{RATE}]))"
        consumed = f"sum by ({by}) (rate({total(CONSUMED)}{sel}[{RATE}]))"
        return [
            Panel("Error rate", "timeseries", "percentunit",
                  ((f"{failed} / ({failed} + {consumed})", legend),), max=1.0,
                  description="Failed handler attempts / all attempts."),
            Panel("Retries and dead letters", "timeseries", "ops",
                  ((f"sum by ({by}) (rate({total(RETRIED)}{sel}[{RATE}]))", f"{legend} retried"),
                   (f"sum by ({by}) (rate({total(DEAD_LETTERED)}{sel}[{RATE}]))", f"{legend} dead-lettered"))),
            Panel("Dead-letter queue size", "timeseries", "short",
                  ((f"sum by (group) ({M.GROUP_DEAD_LETTERS}{self.m(group=group)})", "{{group}}"),),
                  description="Dead letters not yet replayed (lag monitor)."),
        ]

    def runtime_panels(self, by: str, legend: str, group: str) -> list[Panel]:
        sel = self.m(group=group, chain_id=CHAIN)
        g = self.m(group=group)
        return [
            Panel("End-to-end latency p99", "timeseries", "s",
                  ((f"histogram_quantile(0.99, sum by ({by}, le) (rate({LATENCY}_bucket{sel}[{RATE}])))", legend),),
                  description="Now minus the envelope timestamp when the handler succeeded."),
            Panel("Handler duration p99", "timeseries", "s",
                  ((f"histogram_quantile(0.99, sum by ({by}, le) (rate({HANDLER_DURATION}_bucket{sel}[{RATE}])))",
                    legend),)),
            Panel("In flight and paused", "timeseries", "short",
                  ((f"sum by (group) ({IN_FLIGHT}{g})", "{{group}} in flight"),
                   (f"sum by (group) ({PAUSED_PARTITIONS}{g})", "{{group}} paused partitions"))),
            Panel("Seconds since last progress", "timeseries", "s",
                  ((f"time() - max by (group) ({LAST_PROGRESS}{g})", "{{group}}"),),
                  description="Idle consumers grow this too; /healthz fails only with events in flight."),
        ]

    def overview(self) -> dict[str, Any]:
        chain = self.m(chain_id=CHAIN)
        panels = [
            *self.health(GROUP),
            Panel("Events published per topic", "timeseries", "ops",
                  ((f"sum by (event_type, chain_id) (rate({total(PUBLISHED)}{chain}[{RATE}]))",
                    "{{event_type}}.{{chain_id}}"),)),
            Panel("Publish failures", "timeseries", "ops",
                  ((f"sum by (event_type, chain_id) (rate({total(PUBLISH_FAILED)}{chain}[{RATE}]))",
                    "{{event_type}}.{{chain_id}}"),)),
            Panel("Events consumed per group", "timeseries", "ops",
                  ((f"sum by (group) (rate({total(CONSUMED)}{self.m(group=GROUP, chain_id=CHAIN)}[{RATE}]))",
                    "{{group}}"),)),
            *self.lag_panels("group", "{{group}}", GROUP, None),
            *self.failure_panels("group", "{{group}}", GROUP),
            *self.runtime_panels("group", "{{group}}", GROUP),
        ]
        return self.dashboard(f"topo {self.topology.name}: overview", uid(self.topology.name, "overview"),
                              panels, self.topology.groups, fixed_group=False)

    def group_dashboard(self, group: ConsumerGroup) -> dict[str, Any]:
        name = group.name
        by_event, legend_event = "event_type, chain_id", "{{event_type}}.{{chain_id}}"
        by_stream = "topic, partition" if self.kafka else "queue"
        legend_stream = "{{topic}}[{{partition}}]" if self.kafka else "{{queue}}"
        panels = [
            *self.health(name),
            Panel("Events consumed per event type", "timeseries", "ops",
                  ((f"sum by ({by_event}) (rate({total(CONSUMED)}{self.m(group=name, chain_id=CHAIN)}[{RATE}]))",
                    legend_event),)),
            Panel("Members", "timeseries", "short",
                  ((f"max by (group) ({M.GROUP_MEMBERS}{self.m(group=name)})", "{{group}}"),)),
            *self.lag_panels(by_event if self.kafka else "group", legend_event if self.kafka else "{{group}}",
                             name, group),
            *self.lag_panels(by_stream, legend_stream, name, group,
                             suffix=" per partition" if self.kafka else " per queue"),
            *self.failure_panels(by_event, legend_event, name),
            *self.runtime_panels(by_event, legend_event, name),
        ]
        return self.dashboard(f"topo {self.topology.name}: {name}", uid(self.topology.name, name), panels,
                              (group,), fixed_group=True, description=group.description)

    # ------------------------------------------------------------------ layout

    def dashboard(self, title: str, dashboard_uid: str, panels: list[Panel], groups: tuple[ConsumerGroup, ...],
                  *, fixed_group: bool, description: str = "") -> dict[str, Any]:
        return {
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "description": description or f"Generated by topo from topology {self.topology.name}.",
            "editable": False,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"asDropdown": True, "includeVars": True, "keepTime": True, "tags": ["topo"],
                       "title": "topo dashboards", "type": "dashboards"}],
            "panels": layout(panels),
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": ["topo", self.topology.name],
            "templating": {"list": self.variables(groups, fixed_group)},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": title,
            "uid": dashboard_uid,
            "version": 1,
        }


def layout(panels: list[Panel]) -> list[dict[str, Any]]:
    """Left to right, top to bottom on Grafana's 24-column grid; ids in order."""
    out = []
    x = y = row_height = 0
    for index, panel in enumerate(panels):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(panel_json(index + 1, panel, {"h": panel.height, "w": panel.width, "x": x, "y": y}))
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def panel_json(panel_id: int, panel: Panel, grid: dict[str, int]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": t} for t in panel.thresholds]
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps},
                                "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"}}
    if panel.max is not None:
        defaults["max"] = panel.max
        defaults["min"] = 0
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False,
                              "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"}}
        options = {"legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "bottom",
                              "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        options = {"colorMode": "background", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "textMode": "value"}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto",
                     "range": True, "refId": chr(ord("A") + i)}
                    for i, (expr, legend) in enumerate(panel.queries)],
    }


def dump(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def emit(topology: Topology) -> dict[str, str]:
    builder = DashboardBuilder(topology)
    files = {f"{DASHBOARDS_DIR}/overview.json": dump(builder.overview())}
    for group in topology.groups:
        files[f"{DASHBOARDS_DIR}/group-{group.name}.json"] = dump(builder.group_dashboard(group))
    files[f"{PROVISIONING_DIR}/dashboards.yaml"] = render(
        "grafana/dashboards.yaml.j2", topology=topology.name, path=f"{DASHBOARDS_MOUNT}/{topology.name}")
    files[f"{PROVISIONING_DIR}/datasources.yaml"] = render(
        "grafana/datasources.yaml.j2", topology=topology.name, uid=uid(topology.name, "prometheus"))
    return dict(sorted(files.items()))
