"""`topo plan` / `topo apply` against the real brokers, checked through their own admin interfaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from tests.provision.helpers import Cli, kafka_state, rabbit_state, topology_doc, write
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("topic_cleanup")

EVENTS = ("block.new", "transaction.confirmed", "transaction.pending", "token.transfer", "contract.verified")
CHAINS = (138, 1)
WEEK_MS, DAY_MS, MONTH_MS = "604800000", "86400000", "2592000000"
# Groups of the reference topology with an unordered subscription: they get retry plumbing.
RETRYING = ("search-indexer", "analytics", "cache-invalidation", "token-balance-updater", "notifications")


def plan_json(cli: Cli, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    brokers = () if "--broker" in extra else ("--broker", "all")  # --broker repeats: the brokers add up
    code, output = cli("plan", "--topology", path, *brokers, "--json", *extra)
    return code, json.loads(output)


def changes(document: dict[str, Any], action: str, broker: str | None = None) -> set[tuple[str, str]]:
    return {(c["kind"], c["name"]) for c in document["changes"]
            if c["action"] == action and (broker is None or c["broker"] == broker)}


@pytest.mark.usefixtures("kafka_env")
def test_apply_creates_every_resource_and_a_second_apply_changes_nothing(
        cli: Cli, tmp_path: Path, unique_name: str, rabbit_env: str, kafka_admin: Any, rabbitmq_management: Any
) -> None:
    n = unique_name
    path = write(tmp_path, topology_doc(n))
    code, output = cli("apply", "--topology", path, "--broker", "all", "--yes")
    assert code == 0, output

    topics = kafka_state(kafka_admin, f"{n}.")
    expected = {f"{n}.{event}.{chain}" for event in EVENTS for chain in CHAINS}
    expected |= {f"{n}.{group}.retry.{delay}" for group in RETRYING for delay in ("1s", "2s", "4s")}
    expected |= {f"{n}.{group}.dlq" for group in (*RETRYING, "websocket-service", "fee-oracle")}
    assert set(topics) == expected
    assert topics[f"{n}.block.new.138"] == {"partitions": 3, "replication_factor": 1,
                                            "configs": {"retention.ms": WEEK_MS}}
    assert topics[f"{n}.transaction.pending.1"]["configs"] == {"retention.ms": DAY_MS}
    assert topics[f"{n}.analytics.retry.2s"]["configs"] == {"cleanup.policy": "delete", "retention.ms": WEEK_MS}
    assert topics[f"{n}.fee-oracle.dlq"]["configs"] == {"cleanup.policy": "delete", "retention.ms": MONTH_MS}

    rabbit = rabbit_state(rabbitmq_management, rabbit_env)
    owner = {"x-topo-owner": n}
    assert rabbit["exchanges"][f"{n}.events"] == {"type": "topic", "durable": True, "auto_delete": False,
                                                   "internal": False, "arguments": owner}
    assert rabbit["exchanges"][f"{n}.analytics"]["type"] == "x-consistent-hash"
    assert rabbit["exchanges"][f"{n}.analytics"]["arguments"] == {"hash-header": "x-topo-key", **owner}
    work = rabbit["queues"][f"{n}.websocket-service.2"]
    assert work["type"] == "quorum" and work["durable"]
    assert work["arguments"] == {
        "x-queue-type": "quorum", "x-single-active-consumer": True, "x-delivery-limit": 8,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{n}.websocket-service.dlq",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", **owner}
    assert "x-single-active-consumer" not in rabbit["queues"][f"{n}.notifications.0"]["arguments"]
    wait = rabbit["queues"][f"{n}.notifications.retry.4s"]["arguments"]
    assert wait["x-message-ttl"] == 4000 and wait["x-dead-letter-exchange"] == f"{n}.notifications"
    assert rabbit["queues"][f"{n}.fee-oracle.dlq"]["arguments"] == {"x-queue-type": "quorum", **owner}
    assert f"{n}.fee-oracle.retry.1s" not in rabbit["queues"]  # ordered only: retried in place
    bindings = set(rabbit["bindings"])
    for chain in CHAINS:
        assert (f"{n}.events", "exchange", f"{n}.fee-oracle", f"{n}.transaction.pending.{chain}", ()) in bindings
        assert (f"{n}.events", "exchange", f"{n}.fee-oracle", f"{n}.block.new.{chain}", ()) not in bindings
    for index in range(3):
        assert (f"{n}.analytics", "queue", f"{n}.analytics.{index}", "1", ()) in bindings

    code, output = cli("apply", "--topology", path, "--broker", "all", "--yes")
    assert code == 0 and "No changes to apply." in output, output
    assert kafka_state(kafka_admin, f"{n}.") == topics
    assert rabbit_state(rabbitmq_management, rabbit_env) == rabbit
    code, document = plan_json(cli, path)
    assert code == 0 and document["changes"] == [], document


@pytest.mark.usefixtures("kafka_env")
def test_plan_lists_exactly_a_new_chain_and_event(cli: Cli, tmp_path: Path, unique_name: str, rabbit_env: str) -> None:
    n = unique_name
    doc = topology_doc(n)
    assert cli("apply", "--topology", write(tmp_path, doc), "--broker", "all", "--yes")[0] == 0
    doc["chains"][56] = {"name": "bsc"}
    doc["events"]["nft.mint"] = {"key": "token_address", "payload": {"token_address": "address"}}
    doc["consumer_groups"]["analytics"]["subscribes"].append("nft.mint")

    code, document = plan_json(cli, write(tmp_path, doc))
    assert code == 2
    chains = (*CHAINS, 56)
    new_topics = {f"{n}.{event}.56" for event in EVENTS} | {f"{n}.nft.mint.{chain}" for chain in chains}
    assert changes(document, "create", "kafka") == {("topic", name) for name in new_topics}
    new_keys: dict[str, set[str]] = {}
    for group, spec in doc["consumer_groups"].items():
        for event in spec["subscribes"]:
            for chain in chains if event == "nft.mint" else (56,):
                new_keys.setdefault(group, set()).add(f"{n}.{event}.{chain}")
    assert changes(document, "create", "rabbitmq") == {
        ("binding", f"{n}.events -> exchange {n}.{group} [{key}]") for group, keys in new_keys.items() for key in keys}
    assert {c["action"] for c in document["changes"]} == {"create"}


@pytest.mark.usefixtures("kafka_env")
def test_partitions_grow_in_place_and_cannot_shrink(cli: Cli, tmp_path: Path, unique_name: str,
                                                    kafka_admin: Any) -> None:
    n = unique_name
    doc = topology_doc(n)
    assert cli("apply", "--topology", write(tmp_path, doc), "--yes")[0] == 0

    doc["events"]["block.new"]["partitions"] = 5
    doc["events"]["block.new"]["retention"] = "2d"
    path = write(tmp_path, doc)
    code, document = plan_json(cli, path, "--broker", "kafka")
    assert code == 2
    # The dead-letter topics of block.new's groups follow their largest event.
    dlqs = {("topic", f"{n}.{group}.dlq") for group in ("websocket-service", "analytics", "cache-invalidation")}
    assert changes(document, "update") == {("topic", f"{n}.block.new.{chain}") for chain in CHAINS} | dlqs
    update = next(c for c in document["changes"] if c["name"] == f"{n}.block.new.1")
    assert update["differences"] == [{"field": "partitions", "current": 3, "desired": 5},
                                     {"field": "config.retention.ms", "current": WEEK_MS, "desired": "172800000"}]
    assert cli("apply", "--topology", path, "--yes")[0] == 0
    assert kafka_state(kafka_admin, f"{n}.block.new.")[f"{n}.block.new.1"] == {
        "partitions": 5, "replication_factor": 1, "configs": {"retention.ms": "172800000"}}
    assert plan_json(cli, path, "--broker", "kafka")[0] == 0

    doc["events"]["block.new"]["partitions"] = 2
    path = write(tmp_path, doc)
    code, document = plan_json(cli, path, "--broker", "kafka")
    assert code == 3
    impossible = [c for c in document["changes"] if c["action"] == "impossible"]
    block_topics = {("topic", f"{n}.block.new.{chain}") for chain in CHAINS}
    assert {("topic", c["name"]) for c in impossible} == block_topics | dlqs
    assert all("new topic" in c["procedure"] for c in impossible)
    code, output = cli("apply", "--topology", path, "--yes")
    assert code == 3 and "nothing was applied" in output
    assert kafka_state(kafka_admin, f"{n}.block.new.")[f"{n}.block.new.1"]["partitions"] == 5


@pytest.mark.usefixtures("kafka_env")
def test_missing_drift_and_prune_only_owned(cli: Cli, tmp_path: Path, unique_name: str, rabbit_env: str,
                                            kafka_admin: Any, rabbitmq_management: Any) -> None:
    n, api = unique_name, rabbitmq_management
    vhost = api.quote(rabbit_env)
    path = write(tmp_path, topology_doc(n))
    assert cli("apply", "--topology", path, "--broker", "all", "--yes")[0] == 0

    # Behind topo's back: one topic and one queue deleted, owned-looking and foreign ones created.
    kafka_admin.delete_topics([f"{n}.contract.verified.1"])[f"{n}.contract.verified.1"].result(timeout=60)
    api.delete(f"/api/queues/{vhost}/{api.quote(f'{n}.analytics.1')}")
    created = kafka_admin.create_topics([NewTopic(f"{n}.manual", 1, 1), NewTopic(f"{n}.ghost.dlq", 1, 1)])
    for future in created.values():
        future.result(timeout=60)
    wait_until(lambda: {f"{n}.manual", f"{n}.ghost.dlq"} <= set(topics := kafka_admin.list_topics(timeout=10).topics)
               and f"{n}.contract.verified.1" not in topics, 30, "topic metadata")
    extra_config = ConfigResource(ResourceType.TOPIC, f"{n}.block.new.1", incremental_configs=[
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET)])
    kafka_admin.incremental_alter_configs([extra_config])[extra_config].result(timeout=60)
    wait_until(lambda: "max.message.bytes" in kafka_state(kafka_admin, f"{n}.block.new.1")[f"{n}.block.new.1"][
        "configs"], 30, "the config change to reach the broker")
    api.put(f"/api/queues/{vhost}/{api.quote(f'{n}.manual')}", json={"durable": True})
    api.put(f"/api/queues/{vhost}/{api.quote(f'{n}.old')}",
            json={"durable": True, "arguments": {"x-queue-type": "quorum", "x-topo-owner": n}})
    api.put(f"/api/queues/{vhost}/{api.quote('foreign')}", json={"durable": True})
    api.post(f"/api/bindings/{vhost}/e/{api.quote(f'{n}.events')}/q/foreign", json={"routing_key": "#"})

    code, document = plan_json(cli, path)
    assert code == 2
    missing = {(c["kind"], c["name"]) for c in document["changes"] if c["action"] == "create"}
    assert ("topic", f"{n}.contract.verified.1") in missing and ("queue", f"{n}.analytics.1") in missing
    assert all("missing" in c["reason"] for c in document["changes"] if c["action"] == "create")
    drift = {(c["kind"], c["name"], c["owned"]) for c in document["changes"] if c["action"] == "drift"}
    assert drift == {("topic", f"{n}.manual", False), ("topic", f"{n}.ghost.dlq", True),
                     ("topic-config", f"{n}.block.new.1", True),
                     ("queue", f"{n}.manual", False), ("queue", f"{n}.old", True),
                     ("binding", f"{n}.events -> queue foreign [#]", False)}

    code, output = cli("apply", "--topology", path, "--broker", "all", "--yes", "--prune")
    assert code == 0, output
    assert f"deleted topic {n}.ghost.dlq" in output and f"deleted queue {n}.old" in output
    topics = kafka_state(kafka_admin, f"{n}.")
    assert f"{n}.manual" in topics and f"{n}.ghost.dlq" not in topics and f"{n}.contract.verified.1" in topics
    assert topics[f"{n}.block.new.1"]["configs"] == {"retention.ms": WEEK_MS}
    rabbit = rabbit_state(api, rabbit_env)
    assert f"{n}.manual" in rabbit["queues"] and "foreign" in rabbit["queues"] and f"{n}.old" not in rabbit["queues"]
    assert f"{n}.analytics.1" in rabbit["queues"]
    assert (f"{n}.events", "queue", "foreign", "#", ()) in rabbit["bindings"]
    code, document = plan_json(cli, path, "--prune")
    assert code == 0 and {c["action"] for c in document["changes"]} == {"drift"}


def test_changed_queue_argument_is_impossible_and_apply_refuses(cli: Cli, tmp_path: Path, unique_name: str,
                                                                rabbit_env: str, rabbitmq_management: Any) -> None:
    n = unique_name
    doc = topology_doc(n)
    assert cli("apply", "--topology", write(tmp_path, doc), "--broker", "rabbitmq", "--yes")[0] == 0
    doc["consumer_groups"]["fee-oracle"]["retry"] = {"max_retries": 6}  # changes x-delivery-limit
    path = write(tmp_path, doc)
    code, document = plan_json(cli, path, "--broker", "rabbitmq")
    assert code == 3
    impossible = {c["name"]: c for c in document["changes"] if c["action"] == "impossible"}
    assert set(impossible) == {f"{n}.fee-oracle.{i}" for i in range(3)}
    assert impossible[f"{n}.fee-oracle.0"]["differences"] == [
        {"field": "argument.x-delivery-limit", "current": 8, "desired": 11}]
    assert "delete it" in impossible[f"{n}.fee-oracle.0"]["procedure"]
    code, output = cli("apply", "--topology", path, "--broker", "rabbitmq", "--yes")
    assert code == 3 and "nothing was applied" in output
    queue = rabbitmq_management.get(f"/api/queues/{rabbitmq_management.quote(rabbit_env)}/"
                                    f"{rabbitmq_management.quote(f'{n}.fee-oracle.0')}")
    assert queue["arguments"]["x-delivery-limit"] == 8


def test_apply_without_a_terminal_needs_yes(cli: Cli, tmp_path: Path, unique_name: str, kafka_env: str) -> None:
    code, output = cli("apply", "--topology", write(tmp_path, topology_doc(unique_name)))
    assert code == 1 and "pass --yes" in output
