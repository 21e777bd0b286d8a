"""prometheus/rules.yml (alerting rules) and prometheus/rules.test.yml (their promtool unit tests).

One rule group per consumer group, thresholds from the group's merged `alerts`:

* per subscribed event (Kafka: per event topic, i.e. event and chain; RabbitMQ, whose work queues
  mix a group's events: per group): lag over `consumer_lag.events`, oldest unconsumed event older
  than `consumer_lag.seconds`, both for `consumer_lag.for`;
* per event and chain: more than `dead_letter.events` dead-lettered within the failure window
  (`error_rate.for`), failed / handled attempts over `error_rate.ratio` for `error_rate.for`;
* per group: down (no member on the broker, or no runtime exporting the group), stalled (lag and
  no progress over `stalled.for`, judged by the lag monitor), not progressing (a process has
  events in flight and finished none for `stalled.for`: what fails its /healthz), slow (Burrow).

Every selector filters on `topology="<name>"` (the runtime and the monitor label every series
with it), so the rules of two topologies sharing a Prometheus never read each other's series.

Every alert gets a test that fires with its input just above the threshold and one that stays
silent at the threshold. Inputs sit on a grid of `tick` seconds (the greatest common divisor
of the durations involved), so windows hold samples exactly at both ends and the arithmetic in
the tests is exact.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from topo.core import metric_names as M
from topo.core.durations import format_duration
from topo.core.metric_names import CONSUMED, DEAD_LETTERED, FAILED, IN_FLIGHT, LAST_PROGRESS
from topo.core.model import BrokerKind, ConsumerGroup, Delivery, Topology
from topo.generator.render import render

RULES_PATH = "prometheus/rules.yml"
TESTS_PATH = "prometheus/rules.test.yml"
RULES_TEMPLATE = "prometheus/rules.yml.j2"
TESTS_TEMPLATE = "prometheus/rules.test.yml.j2"

MAX_RATE_WINDOW = 300.0  # seconds: rate() over at most 5m, at least 1m
MIN_RATE_WINDOW = 60.0
MAX_TICK_MS = 30_000
ERROR_RATE_SCALE = 1_000_000  # handled attempts per tick in the error-rate tests

Series = tuple[str, str]  # (series selector with labels, promtool values notation)


@dataclass(frozen=True)
class Case:
    """A promtool test group: inputs and the alert expected (None: silent) at `eval_seconds`."""

    name: str
    series: tuple[Series, ...]
    eval_seconds: float
    fires: bool
    labels: dict[str, str]  # the alert's labels when it fires (expression labels + rule labels)
    absent: tuple[str, ...] = ()  # groups whose runtime series the case leaves out on purpose


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_seconds: float
    labels: dict[str, str]
    annotations: dict[str, str]  # may hold {{ $labels.x }}: expanded in tests by `expand`
    cases: tuple[Case, ...] = field(default=(), compare=False)

    def expand(self, labels: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, text in self.annotations.items():
            for name, value in labels.items():
                text = text.replace("{{ $labels." + name + " }}", value)
            out[key] = text
        return out


def q(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value)


def selector(metric: str, **labels: str) -> str:
    inner = ", ".join(f"{key}={q(value)}" for key, value in labels.items())
    return f"{metric}{{{inner}}}" if inner else metric


def num(value: float) -> str:
    """A number as PromQL and promtool write it: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def rate_window(group: ConsumerGroup) -> float:
    return min(MAX_RATE_WINDOW, max(MIN_RATE_WINDOW, group.alerts.error_rate_for_seconds))


def tick_ms(topology: Topology) -> int:
    durations = [MAX_TICK_MS]
    for alerts in (topology.alerts, *(g.alerts for g in topology.groups)):
        durations += [round(alerts.lag_for_seconds * 1000), round(alerts.error_rate_for_seconds * 1000),
                      round(alerts.stalled_for_seconds * 1000)]
    durations += [round(rate_window(g) * 1000) for g in topology.groups]
    return max(1, reduce(math.gcd, [d for d in durations if d > 0]))


class Builder:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.tick = tick_ms(topology) / 1000.0
        self.kafka = topology.broker is BrokerKind.KAFKA

    # ------------------------------------------------------------------ helpers

    def steps(self, until: float) -> int:
        """Number of repetitions in promtool's `a+bxN` so a series spans [0, until + 2 ticks]."""
        return math.ceil(until / self.tick) + 2

    def constant(self, value: float, until: float) -> str:
        return f"{num(value)}x{self.steps(until)}"

    def ramp(self, start: float, step: float, until: float) -> str:
        return f"{num(start)}+{num(step)}x{self.steps(until)}"

    def sel(self, metric: str, **labels: str) -> str:
        """A selector of this topology's series: every runtime and monitor series has `topology`."""
        return selector(metric, topology=self.topology.name, **labels)

    def at_tick(self, seconds: float) -> float:
        return math.ceil(seconds / self.tick - 1e-9) * self.tick

    def rule_labels(self, severity: str) -> dict[str, str]:
        return {"severity": severity, "topology": self.topology.name}

    def look_closer(self, group: ConsumerGroup) -> str:
        return f"Look closer: topo lag --group {group.name}"

    def threshold_cases(self, name: str, metric_labels: dict[str, str], metric: str, above: float, below: float,
                        for_seconds: float, alert_labels: dict[str, str], extra: tuple[Series, ...] = ()
                        ) -> tuple[Case, ...]:
        """A gauge held at `above` (fires after `for`) or at `below` (silent)."""
        at = self.at_tick(for_seconds + self.tick)
        sel = self.sel(metric, **metric_labels)
        return (Case(f"{name} fires above its threshold", ((sel, self.constant(above, at)), *extra), at, True,
                     alert_labels),
                Case(f"{name} is silent at its threshold", ((sel, self.constant(below, at)), *extra), at, False,
                     alert_labels))

    # ------------------------------------------------------------------ rules

    def group_rules(self, group: ConsumerGroup) -> list[Rule]:
        rules: list[Rule] = []
        rules += self.lag_rules(group)
        for subscription in group.subscriptions:
            if subscription.chains:  # the rules cover every chain; the tests use the first
                chain = str(subscription.chains[0])
                rules.append(self.dead_letter_rule(group, subscription.event, chain))
                rules.append(self.error_rate_rule(group, subscription.event, chain))
        rules += [self.down_rule(group), self.stalled_rule(group), self.not_progressing_rule(group),
                  self.slow_rule(group)]
        return rules

    def lag_rules(self, group: ConsumerGroup) -> list[Rule]:
        a = group.alerts
        rules = []
        if self.kafka:
            for subscription in group.subscriptions:
                if not subscription.topics:
                    continue
                event, topic, chain = subscription.event, subscription.topics[0], str(subscription.chains[0])
                by = "group, event_type, chain_id, topic"
                series = {"group": group.name, "topic": topic, "partition": "0", "event_type": event,
                          "chain_id": chain}
                labels = {"group": group.name, "event_type": event, "chain_id": chain, "topic": topic,
                          **self.rule_labels("warning")}
                scope = {"group": group.name, "event_type": event}
                where = (f"{event} on chain {{{{ $labels.chain_id }}}} (topic {{{{ $labels.topic }}}})")
                rules.append(self.rule(
                    "TopoConsumerLag",
                    f"sum by ({by}) ({self.sel(M.KAFKA_GROUP_LAG, group=group.name, event_type=event)}) "
                    f"> {num(a.lag_events)}",
                    a.lag_for_seconds, "warning",
                    f"Consumer group {group.name} is more than {a.lag_events} events behind on {where}",
                    f"Lag above {a.lag_events} events for {format_duration(a.lag_for_seconds)}. "
                    + self.look_closer(group),
                    self.threshold_cases(f"{group.name} {event} lag", series, M.KAFKA_GROUP_LAG, a.lag_events + 1,
                                         a.lag_events, a.lag_for_seconds, labels), **scope))
                rules.append(self.rule(
                    "TopoConsumerLagSeconds",
                    f"max by ({by}) ({self.sel(M.KAFKA_GROUP_LAG_SECONDS, group=group.name, event_type=event)}) "
                    f"> {num(a.lag_seconds)}",
                    a.lag_for_seconds, "warning",
                    f"Consumer group {group.name} has {event} events older than "
                    f"{format_duration(a.lag_seconds)} waiting on chain {{{{ $labels.chain_id }}}} "
                    f"(topic {{{{ $labels.topic }}}})",
                    f"The oldest unconsumed event is older than {format_duration(a.lag_seconds)} for "
                    f"{format_duration(a.lag_for_seconds)}. " + self.look_closer(group),
                    self.threshold_cases(f"{group.name} {event} lag seconds", series, M.KAFKA_GROUP_LAG_SECONDS,
                                         a.lag_seconds + 1, a.lag_seconds, a.lag_for_seconds, labels),
                    **scope))
            return rules
        queues = ", ".join(group.rabbitmq.queues)
        series = {"group": group.name, "queue": group.rabbitmq.queues[0], "kind": "events"}
        labels = {"group": group.name, **self.rule_labels("warning")}
        scope = {"group": group.name}
        rules.append(self.rule(
            "TopoConsumerLag",
            f"sum by (group) ({self.sel(M.RABBIT_QUEUE_LAG, group=group.name, kind='events')}) > {num(a.lag_events)}",
            a.lag_for_seconds, "warning",
            f"Consumer group {group.name} is more than {a.lag_events} events behind (queues {queues})",
            f"Ready + unacknowledged messages above {a.lag_events} for {format_duration(a.lag_for_seconds)}. "
            + self.look_closer(group),
            self.threshold_cases(f"{group.name} lag", series, M.RABBIT_QUEUE_LAG, a.lag_events + 1, a.lag_events,
                                 a.lag_for_seconds, labels), **scope))
        rules.append(self.rule(
            "TopoConsumerLagSeconds",
            f"max by (group) ({self.sel(M.RABBIT_QUEUE_LAG_SECONDS, group=group.name, kind='events')}) "
            f"> {num(a.lag_seconds)}",
            a.lag_for_seconds, "warning",
            f"Consumer group {group.name} has messages older than {format_duration(a.lag_seconds)} waiting "
            f"(queues {queues})",
            f"The oldest message is older than {format_duration(a.lag_seconds)} for "
            f"{format_duration(a.lag_for_seconds)}. " + self.look_closer(group),
            self.threshold_cases(f"{group.name} lag seconds", series, M.RABBIT_QUEUE_LAG_SECONDS, a.lag_seconds + 1,
                                 a.lag_seconds, a.lag_for_seconds, labels), **scope))
        return rules

    def dead_letter_rule(self, group: ConsumerGroup, event: str, chain: str) -> Rule:
        a = group.alerts
        window = a.error_rate_for_seconds
        severity = "critical" if group.delivery is Delivery.EXACTLY_ONCE else "warning"
        metric = DEAD_LETTERED + "_total"
        by = "group, event_type, chain_id"
        labels = {"group": group.name, "event_type": event, "chain_id": chain, **self.rule_labels(severity)}
        series_labels = {"group": group.name, "event_type": event, "chain_id": chain, "reason": "max_retries"}
        # Counter at 0 until one tick after the window starts, then the dead letters: the window's
        # first and last samples sit on its edges, so increase() is exact.
        at = self.at_tick(window + self.tick)
        zeros = round(window / self.tick)

        def counter(total: int) -> str:
            return f"0x{zeros} {total}x{self.steps(at)}"

        sel = self.sel(metric, **series_labels)
        return self.rule(
            "TopoDeadLettered",
            f"sum by ({by}) (increase({self.sel(metric, group=group.name, event_type=event)}"
            f"[{format_duration(window)}])) > {a.dead_letter_events}",
            0, severity,
            f"Consumer group {group.name} dead-lettered {event} events on chain {{{{ $labels.chain_id }}}}",
            f"More than {a.dead_letter_events} events dead-lettered within {format_duration(window)}; they wait "
            f"in {self.dlq(group)}. Inspect them with: topo dlq list --group {group.name}. "
            + self.look_closer(group),
            (Case(f"{group.name} {event} dead letters fire above the threshold",
                  ((sel, counter(a.dead_letter_events + 1)),), at, True, labels),
             Case(f"{group.name} {event} dead letters are silent at the threshold",
                  ((sel, counter(a.dead_letter_events)),), at, False, labels)), group=group.name, event_type=event)

    def dlq(self, group: ConsumerGroup) -> str:
        return group.kafka.dlq_topic if self.kafka else group.rabbitmq.dlq_queue

    def error_rate_rule(self, group: ConsumerGroup, event: str, chain: str) -> Rule:
        a = group.alerts
        window = format_duration(rate_window(group))
        by = "group, event_type, chain_id"
        failed = f"rate({self.sel(FAILED + '_total', group=group.name, event_type=event)}[{window}])"
        consumed = f"rate({self.sel(CONSUMED + '_total', group=group.name, event_type=event)}[{window}])"
        expr = (f"sum by ({by}) ({failed}) / (sum by ({by}) ({failed}) + sum by ({by}) ({consumed})) "
                f"> {num(a.error_rate_ratio)}")
        labels = {"group": group.name, "event_type": event, "chain_id": chain, **self.rule_labels("warning")}
        at = self.at_tick(rate_window(group) + a.error_rate_for_seconds + self.tick)
        series_labels = {"group": group.name, "event_type": event, "chain_id": chain}

        def inputs(failures: int) -> tuple[Series, ...]:
            return ((self.sel(FAILED + "_total", **series_labels), self.ramp(0, failures, at)),
                    (self.sel(CONSUMED + "_total", **series_labels), self.ramp(0, ERROR_RATE_SCALE - failures, at)))

        above = math.floor(a.error_rate_ratio * ERROR_RATE_SCALE) + 1
        below = math.ceil(a.error_rate_ratio * ERROR_RATE_SCALE) - 1
        cases = []
        if above <= ERROR_RATE_SCALE:
            cases.append(Case(f"{group.name} {event} error rate fires above the ratio", inputs(above), at, True,
                              labels))
        if below >= 0:
            cases.append(Case(f"{group.name} {event} error rate is silent below the ratio", inputs(below), at,
                              False, labels))
        return self.rule(
            "TopoErrorRate", expr, a.error_rate_for_seconds, "warning",
            f"Consumer group {group.name} fails more than {a.error_rate_ratio:g} of its {event} attempts on "
            f"chain {{{{ $labels.chain_id }}}}",
            f"Failed / handled attempts over {window} above {a.error_rate_ratio:g} for "
            f"{format_duration(a.error_rate_for_seconds)}; failing events are retried, then dead-lettered. "
            + self.look_closer(group),
            tuple(cases), group=group.name, event_type=event)

    def progress_series(self, group: ConsumerGroup, until: float) -> Series:
        return (self.sel(LAST_PROGRESS, group=group.name), self.ramp(0, self.tick, until))

    def down_rule(self, group: ConsumerGroup) -> Rule:
        a = group.alerts
        members = self.sel(M.GROUP_MEMBERS, group=group.name)
        expr = (f"max by (group) ({members}) == 0 "
                f"or absent({self.sel(LAST_PROGRESS, group=group.name)})")
        labels = {"group": group.name, **self.rule_labels("critical")}
        at = self.at_tick(a.lag_for_seconds + self.tick)
        cases = (*self.threshold_cases(f"{group.name} down", {"group": group.name}, M.GROUP_MEMBERS, 0, 1,
                                       a.lag_for_seconds, labels, (self.progress_series(group, at),)),
                 Case(f"{group.name} down fires when no runtime exports the group",
                      ((members, self.constant(1, at)),), at, True, labels, absent=(group.name,)))
        return self.rule(
            "TopoConsumerDown", expr, a.lag_for_seconds, "critical",
            f"Consumer group {group.name} has no running consumer",
            f"No member of {group.name} on the broker, or no `topo run --group {group.name}` scraped, for "
            f"{format_duration(a.lag_for_seconds)}. " + self.look_closer(group),
            cases, group=group.name)

    def stalled_rule(self, group: ConsumerGroup) -> Rule:
        a = group.alerts
        labels = {"group": group.name, **self.rule_labels("critical")}
        return self.rule(
            "TopoConsumerStalled", f"max by (group) ({self.sel(M.GROUP_STALLED, group=group.name)}) == 1", 0,
            "critical", f"Consumer group {group.name} is stalled",
            f"Events wait and the group's position has not moved for {format_duration(a.stalled_for_seconds)}. "
            + self.look_closer(group),
            self.threshold_cases(f"{group.name} stalled", {"group": group.name}, M.GROUP_STALLED, 1, 0, 0, labels),
            group=group.name)

    def not_progressing_rule(self, group: ConsumerGroup) -> Rule:
        a = group.alerts
        limit = a.stalled_for_seconds
        expr = (f"max by (group) (time() - {self.sel(LAST_PROGRESS, group=group.name)} > {num(limit)} "
                f"and {self.sel(IN_FLIGHT, group=group.name)} > 0)")
        labels = {"group": group.name, **self.rule_labels("critical")}
        at = self.at_tick(limit + 2 * self.tick)
        in_flight = (self.sel(IN_FLIGHT, group=group.name), self.constant(1, at))

        def progress(behind: float) -> Series:
            # At time t the gauge says t - behind: the last progress is `behind` seconds old.
            return (self.sel(LAST_PROGRESS, group=group.name), self.ramp(-behind, self.tick, at))

        return self.rule(
            "TopoConsumerNotProgressing", expr, 0, "critical",
            f"A consumer of group {group.name} has events in flight and finished none for "
            f"{format_duration(limit)}",
            "Its /healthz answers 503: a handler is stuck or the process is wedged. " + self.look_closer(group),
            (Case(f"{group.name} not progressing fires past the limit", (progress(limit + self.tick), in_flight),
                  at, True, labels),
             Case(f"{group.name} not progressing is silent at the limit", (progress(limit), in_flight), at, False,
                  labels)), group=group.name)

    def slow_rule(self, group: ConsumerGroup) -> Rule:
        a = group.alerts
        labels = {"group": group.name, **self.rule_labels("warning")}
        return self.rule(
            "TopoSlowConsumer", f"max by (group) ({self.sel(M.GROUP_SLOW, group=group.name)}) == 1", 0, "warning",
            f"Consumer group {group.name} does not keep up",
            f"It consumes, but its lag has not fallen for {format_duration(a.lag_for_seconds)}: add consumers "
            f"(up to the partition count) or make the handler faster. " + self.look_closer(group),
            self.threshold_cases(f"{group.name} slow", {"group": group.name}, M.GROUP_SLOW, 1, 0, 0, labels),
            group=group.name)

    def monitor_rule(self) -> Rule:
        a = self.topology.alerts
        labels = self.rule_labels("warning")
        up = self.sel(M.MONITOR_UP)
        return self.rule(
            "TopoLagMonitorDown", f"{up} == 0 or absent({up})", a.lag_for_seconds, "warning",
            f"The lag monitor of topology {self.topology.name} is down or cannot reach the broker",
            "Lag, stalled and slow-consumer alerts are blind until `topo monitor` polls again.",
            (*self.threshold_cases("lag monitor down", {}, M.MONITOR_UP, 0, 1, a.lag_for_seconds, labels),))

    def rule(self, alert: str, expr: str, for_seconds: float, severity: str, summary: str, description: str,
             cases: tuple[Case, ...], **scope: str) -> Rule:
        """`scope` (group, event_type) become static labels too: they keep every rule's identity
        unique for `promtool check rules` and survive aggregations."""
        return Rule(alert, expr, for_seconds, {**scope, **self.rule_labels(severity)},
                    {"summary": summary, "description": description}, cases)

    def cover(self, case: Case) -> tuple[Series, ...]:
        """Series every test needs so that absent() rules of groups not under test stay silent."""
        present = {s for s, _ in case.series}
        extra: list[Series] = []
        for group in self.topology.groups:
            progress = self.progress_series(group, case.eval_seconds)
            if group.name not in case.absent and progress[0] not in present:
                extra.append(progress)
        if self.sel(M.MONITOR_UP) not in present:
            extra.append((self.sel(M.MONITOR_UP), self.constant(1, case.eval_seconds)))
        return (*case.series, *extra)


def rule_groups(builder: Builder) -> list[tuple[str, list[Rule]]]:
    topology = builder.topology
    groups = [(f"topo.{topology.name}.{g.name}", builder.group_rules(g)) for g in topology.groups]
    groups.append((f"topo.{topology.name}.monitor", [builder.monitor_rule()]))
    return groups


def _rule_view(rule: Rule) -> dict[str, object]:
    return {"alert": rule.alert, "expr": rule.expr,
            "for": format_duration(rule.for_seconds) if rule.for_seconds else None,
            "labels": rule.labels, "annotations": rule.annotations}


@dataclass
class Bucket:
    """One promtool test group holding cases that cannot disturb each other: no shared input
    series, and no input for a group whose runtime series a case needs absent. promtool checks
    every instance of an alert name at an evaluation time, so the cases of one name share one
    check (same time), which lists the alerts of its firing cases: the silent ones must not fire."""

    topology: str
    cases: list[tuple[Rule, Case]] = field(default_factory=list)
    series: dict[str, str] = field(default_factory=dict)
    evals: dict[str, float] = field(default_factory=dict)  # alert name -> its check's evaluation time
    absent: set[str] = field(default_factory=set)

    def accepts(self, rule: Rule, case: Case) -> bool:
        if self.evals.get(rule.alert, case.eval_seconds) != case.eval_seconds:
            return False
        if any(s in self.series for s, _ in case.series):
            return False
        selectors = {s for s, _ in case.series}
        needs_absent = [selector(LAST_PROGRESS, topology=self.topology, group=g) for g in case.absent]
        blocked = [selector(LAST_PROGRESS, topology=self.topology, group=g) for g in self.absent]
        return not any(s in self.series or s in selectors for s in needs_absent + blocked)

    def add(self, rule: Rule, case: Case) -> None:
        self.cases.append((rule, case))
        self.series.update(case.series)
        self.evals[rule.alert] = case.eval_seconds
        self.absent.update(case.absent)


def pack(topology: str, groups: list[tuple[str, list[Rule]]]) -> list[Bucket]:
    buckets: list[Bucket] = []
    for _, rules in groups:
        for rule in rules:
            for case in rule.cases:
                bucket = next((b for b in buckets if b.accepts(rule, case)), None)
                if bucket is None:
                    bucket = Bucket(topology)
                    buckets.append(bucket)
                bucket.add(rule, case)
    return buckets


def _bucket_view(builder: Builder, index: int, bucket: Bucket, interval: str) -> dict[str, object]:
    until = max(case.eval_seconds for _, case in bucket.cases)
    merged = Case("", tuple(bucket.series.items()), until, False, {}, tuple(sorted(bucket.absent)))
    checks: dict[str, dict[str, Any]] = {}
    for rule, case in bucket.cases:
        check = checks.setdefault(rule.alert, {"eval_time": format_duration(case.eval_seconds),
                                               "alertname": rule.alert, "names": [], "exp_alerts": []})
        check["names"].append(case.name)
        if case.fires:
            check["exp_alerts"].append({"exp_labels": case.labels, "exp_annotations": rule.expand(case.labels)})
    return {"name": f"bucket {index + 1}", "interval": interval,
            "series": [{"series": s, "values": v} for s, v in builder.cover(merged)], "checks": list(checks.values())}


def emit(topology: Topology) -> dict[str, str]:
    builder = Builder(topology)
    groups = rule_groups(builder)
    tick = format_duration(builder.tick)
    rules_text = render(RULES_TEMPLATE, topology=topology.name,
                        groups=[{"name": name, "rules": [_rule_view(r) for r in rules]} for name, rules in groups])
    tests = [_bucket_view(builder, i, bucket, tick) for i, bucket in enumerate(pack(topology.name, groups))]
    tests_text = render(TESTS_TEMPLATE, topology=topology.name, rule_file="rules.yml", interval=tick, tests=tests)
    return {RULES_PATH: rules_text, TESTS_PATH: tests_text}

