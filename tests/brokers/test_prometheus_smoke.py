"""Smoke tests for Prometheus: promtool checks rules, a real server scrapes RabbitMQ and fires an alert."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.prometheus

RULES = """\
groups:
  - name: smoke
    rules:
      - alert: AlwaysFiring
        expr: vector(1) > 0
        labels:
          severity: info
        annotations:
          summary: proves that rules load and alerts fire
      - alert: RabbitMQScrapeDown
        expr: up{job="rabbitmq"} == 0
        for: 1m
"""


def _write_rules(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "smoke.yml"
    path.write_text(RULES)
    return path


def test_promtool_checks_rules(promtool: str, tmp_path: Path) -> None:
    good = _write_rules(tmp_path / "rules")
    result = subprocess.run([promtool, "check", "rules", str(good)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(\n")
    result = subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_prometheus_scrapes_rabbitmq_and_fires_an_alert(
    prometheus_server: Callable[..., Any], rabbitmq_management: Any, tmp_path: Path
) -> None:
    rabbit_metrics = os.environ.get("RABBITMQ_PROMETHEUS_URL", "http://127.0.0.1:15692")
    target = urllib.parse.urlsplit(rabbit_metrics).netloc
    rules_dir = tmp_path / "rules"
    _write_rules(rules_dir)
    prom = prometheus_server(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "rabbitmq", "static_configs": [{"targets": [target]}]}],
        },
        rules_dir=rules_dir,
    )

    def firing_and_scraped() -> list[dict[str, Any]]:
        firing = [a for a in prom.alerts() if a["labels"]["alertname"] == "AlwaysFiring" and a["state"] == "firing"]
        return firing if firing and prom.query('rabbitmq_identity_info{job="rabbitmq"}') else []

    firing = wait_until(firing_and_scraped, 60, lambda: f"AlwaysFiring and rabbitmq series (alerts {prom.alerts()})",
                        interval=0.5)
    assert firing[0]["labels"]["severity"] == "info"
    assert {group["name"] for group in prom.rules()} == {"smoke"}
