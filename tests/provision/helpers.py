"""Helpers for the provisioning tests: a per-test copy of the reference topology, the CLI, and
views of the brokers taken through their own admin interfaces (never through topo's model)."""

from __future__ import annotations

import copy
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from topo.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "topology.yaml").read_text())


def topology_doc(name: str) -> dict[str, Any]:
    """The reference topology renamed so that every topic, exchange and queue name is unique to the test."""
    doc: dict[str, Any] = copy.deepcopy(REFERENCE)
    doc["name"] = name
    doc["broker"]["rabbitmq"]["exchange"] = f"{name}.events"
    # Event topics carry the topology name too, so tests never share a topic with anyone.
    doc["naming"] = {"topic": "{topology}.{event_type}.{chain_id}"}
    return doc


def small_doc(name: str) -> dict[str, Any]:
    """One chain, an ordered and an unordered event, two groups: quick for the Kafka shell tools."""
    return {
        "version": 1,
        "name": name,
        "broker": {"kind": "kafka", "rabbitmq": {"exchange": f"{name}.events", "partitions": 2}},
        "naming": {"topic": "{topology}.{event_type}.{chain_id}"},
        "chains": {1: {"name": "ethereum"}},
        "defaults": {"retention": "7d"},
        "events": {
            "block.new": {"key": "chain_id", "ordered": True, "payload": {"block_number": "integer"}},
            "token.transfer": {"key": "token_address", "retention": "1d", "payload": {"token_address": "address"}},
        },
        "consumer_groups": {
            "indexer": {"subscribes": ["block.new", "token.transfer"],
                        "retry": {"max_retries": 2, "backoff": "fixed", "initial": "1s"}},
            "ws": {"subscribes": ["block.new"], "partitions": 1},
        },
    }


def write(tmp_path: Path, doc: dict[str, Any], file: str = "topology.yaml") -> Path:
    path = tmp_path / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str | Path) -> tuple[int, str]:
        result = self.runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.output



# --------------------------------------------------------------------------- broker views


def kafka_state(admin: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Topics under `prefix`: partitions, replication factor and the configs set on the topic."""
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType  # type: ignore[attr-defined]

    metadata = admin.list_topics(timeout=30).topics
    names = sorted(n for n in metadata if n.startswith(prefix))
    state: dict[str, dict[str, Any]] = {}
    if not names:
        return state
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    for resource, future in futures.items():
        entries = future.result(timeout=30)
        topic = metadata[resource.name]
        state[resource.name] = {
            "partitions": len(topic.partitions),
            "replication_factor": len(next(iter(topic.partitions.values())).replicas),
            "configs": {k: e.value for k, e in entries.items() if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value},
        }
    return state


def rabbit_state(api: Any, vhost: str) -> dict[str, Any]:
    """Exchanges, queues and bindings of a vhost as the management API reports them (without
    the built-in `amq.*` exchanges and the `aliveness-test` queue the vhost fixture leaves)."""
    v = api.quote(vhost)
    exchanges = {e["name"]: {"type": e["type"], "durable": e["durable"], "auto_delete": e["auto_delete"],
                             "internal": e["internal"], "arguments": e["arguments"]}
                 for e in api.get(f"/api/exchanges/{v}") if e["name"] and not e["name"].startswith("amq.")}
    queues = {q["name"]: {"durable": q["durable"], "auto_delete": q["auto_delete"], "arguments": q["arguments"],
                          "type": q.get("type")}
              for q in api.get(f"/api/queues/{v}") if q["name"] != "aliveness-test"}
    bindings = sorted((b["source"], b["destination_type"], b["destination"], b["routing_key"],
                       tuple(sorted(b["arguments"].items())))
                      for b in api.get(f"/api/bindings/{v}") if b["source"])
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}

def management_url_with_credentials(api: Any) -> str:
    parts = urllib.parse.urlsplit(str(api.url))
    credentials = f"{urllib.parse.quote(api.user, safe='')}:{urllib.parse.quote(api.password, safe='')}"
    return urllib.parse.urlunsplit((parts.scheme, f"{credentials}@{parts.netloc}", parts.path, "", ""))
