"""Validation rules that are not one-defect fixtures: warnings, environment, escapes, many errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gen_support import REFERENCE, SECOND, Invoke

from topo.generator.load import load
from topo.generator.parse import parse_text
from topo.generator.validate import validate

MINIMAL = """version: 1
name: shop
chains:
  1: {name: main}
events:
  order.placed:
    producers: [web]
    payload:
      order_id: string
consumer_groups:
  billing:
    subscribes: [order.placed]
"""


def diagnostics_of(text: str, env: dict[str, str] | None = None) -> list[tuple[int, int, str, str]]:
    document, diagnostics = parse_text(text, "t.yaml")
    assert document is not None and diagnostics == []
    return [(d.line, d.col, d.severity, d.message) for d in validate(document, env or {})]


@pytest.mark.parametrize("path", [REFERENCE, SECOND], ids=["reference", "second"])
def test_valid_topologies_have_no_diagnostics(path: Path, topo: Invoke) -> None:
    result = topo("validate", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert "valid" in result.stdout


def test_the_minimal_topology_is_clean() -> None:
    assert diagnostics_of(MINIMAL) == []


def test_unconsumed_and_unproduced_events_are_warnings(tmp_path: Path, topo: Invoke) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL.replace("      order_id: string\n",
                                    "      order_id: string\n  order.paid:\n    payload: {order_id: string}\n"))
    result = topo("validate", str(path))
    assert result.exit_code == 0
    assert f"{path}:10:3: warning: no consumer group subscribes to event `order.paid`" in result.stderr
    assert f"{path}:10:3: warning: event `order.paid` has no producer" in result.stderr
    assert "0 errors, 2 warnings" in result.stderr


def test_environment_references_resolve_against_the_environment() -> None:
    text = MINIMAL.replace("chains:", 'broker:\n  kafka: {sasl_password: "${SHOP_SECRET}"}\nchains:')
    assert [d[3] for d in diagnostics_of(text)] == [
        "environment variable SHOP_SECRET is not set and `broker.kafka.sasl_password` gives it no default"]
    assert diagnostics_of(text, {"SHOP_SECRET": "s3cret"}) == []
    with_default = text.replace("${SHOP_SECRET}", "${SHOP_SECRET:-}")
    assert diagnostics_of(with_default) == []


def test_unset_variable_points_at_the_reference_inside_the_string() -> None:
    text = MINIMAL.replace("chains:", 'broker:\n  rabbitmq:\n    url: "amqp://${H:-x}:${PORT}/"\nchains:')
    assert diagnostics_of(text)[0][:2] == (5, 26)


def test_a_literal_dollar_brace_is_escaped_with_two_dollars() -> None:
    text = MINIMAL.replace("    producers: [web]\n", "    description: costs $${amount}\n    producers: [web]\n")
    assert diagnostics_of(text) == []


ONE_PARTITION = MINIMAL.replace("chains:", "broker: {kind: kafka, kafka: {partitions: 1}}\nchains:")


def test_dedup_path_may_read_the_environment() -> None:
    text = ONE_PARTITION + '    dedup: {store: sqlite, path: "${STATE_DIR:-/tmp}/billing.sqlite"}\n'
    assert diagnostics_of(text) == []


def test_a_sqlite_store_in_a_group_that_scales_out_is_a_warning_naming_the_shared_store() -> None:
    text = MINIMAL + '    dedup: {store: sqlite, path: "/tmp/billing.sqlite"}\n'
    [(line, col, severity, message)] = diagnostics_of(text)
    assert (line, col, severity) == (13, 20, "warning")
    assert "group `billing` keeps its dedup store in SQLite, but its autoscaling runs up to 3 replicas" in message
    assert diagnostics_of(ONE_PARTITION + '    dedup: {store: sqlite, path: "/tmp/billing.sqlite"}\n') == []


def test_a_postgres_store_needs_its_dsn_from_the_environment() -> None:
    assert diagnostics_of(MINIMAL + '    dedup: {store: postgres, dsn: "${DATABASE_URL}"}\n',
                          {"DATABASE_URL": "postgresql://u:p@db/x"}) == []
    [missing] = diagnostics_of(MINIMAL + "    dedup: {store: postgres}\n")
    assert missing[2:] == ("error", "the postgres dedup store needs a `dsn`")
    [literal] = diagnostics_of(MINIMAL + '    dedup: {store: postgres, dsn: "postgresql://u:secret@db/x"}\n')
    assert literal[2] == "error" and "holds credentials" in literal[3]
    [table] = diagnostics_of(MINIMAL + '    dedup: {store: postgres, dsn: "${DATABASE_URL:-x}", table: "a; drop"}\n')
    assert table[2] == "error"


def test_all_errors_of_a_run_are_reported_in_order(tmp_path: Path, topo: Invoke) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL.replace("name: shop", "name: Shop").replace("[web]", "[web, web]")
                    .replace("[order.placed]", "[order.placd]") + "alerts: {error_rate: {ratio: 2}}\n")
    result = topo("validate", str(path))
    assert result.exit_code == 1
    places = [line.split(": ")[0] for line in result.stderr.splitlines() if ": error: " in line]
    assert places == [f"{path}:2:7", f"{path}:7:22", f"{path}:12:18", f"{path}:13:30"]
    assert "4 errors" in result.stderr


def test_kafka_dot_underscore_collisions_are_reported() -> None:
    text = MINIMAL.replace("consumer_groups:", "  order_placed_v:\n    producers: [web]\n  order.placed.v:\n"
                           "    producers: [web]\nconsumer_groups:").replace(
        "[order.placed]", "[order.placed, order_placed_v, order.placed.v]")
    messages = [d[3] for d in diagnostics_of(text) if d[2] == "error"]
    assert any("collides with `order_placed_v.1`" in m and "Kafka treats" in m for m in messages), messages


def test_exactly_once_is_fine_on_kafka() -> None:
    assert diagnostics_of(MINIMAL + "    delivery: exactly_once\n") == []


def test_validation_without_environment_uses_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL.replace("chains:", 'broker:\n  kafka: {bootstrap_servers: "${SHOP_KAFKA}"}\nchains:'))
    monkeypatch.delenv("SHOP_KAFKA", raising=False)
    assert load(path)[0] is None
    monkeypatch.setenv("SHOP_KAFKA", "kafka-1:9092,kafka-2:9092")
    assert load(path)[0] is not None


def test_an_unreadable_file_is_an_error_not_a_usage_error(topo: Invoke, tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        result = topo("validate", str(path))
        assert result.exit_code == 1
        assert result.stderr.startswith(f"{path}: error: cannot read the topology")


def test_the_installed_command_exits_1_on_an_invalid_topology(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL.replace("subscribes:", "subscribe:"))
    result = subprocess.run([sys.executable, "-m", "topo", "validate", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"{path}:12:5: error: unknown key `subscribe` in `consumer_groups.billing`"
    assert result.stderr.splitlines()[1] == "  hint: did you mean `subscribes`?"
