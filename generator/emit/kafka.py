"""Kafka provisioning artifacts: topics.sh, desired-state.json and Strimzi KafkaTopic manifests.

Every topic, partition count, replication factor and config comes from
`topo.core.desired.kafka_topics`, the same list `topo plan` / `topo apply` work from.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from topo.core.connect import env_setting
from topo.core.desired import TopicSpec, kafka_topics
from topo.core.k8s import label_value, resource_names
from topo.core.model import Topology
from topo.generator.jsonout import pretty, quoted
from topo.generator.render import render

SCRIPT = "kafka/topics.sh"
DESIRED_STATE = "kafka/desired-state.json"
MANIFESTS = "k8s/kafka/kafkatopics.yaml"
DESIRED_STATE_FORMAT = 1
# Linux caps one command-line argument at 128 KiB: past this, topics.sh describes every topic.
MAX_REGEX = 100_000
STRIMZI_API_VERSION = "kafka.strimzi.io/v1"


def config_arguments(configs: dict[str, str]) -> list[str]:
    """`key=value` pairs as kafka-topics.sh --config takes them (one pair per argument)."""
    return [f"{key}={value}" for key, value in sorted(configs.items())]


def add_config(configs: dict[str, str]) -> str:
    """kafka-configs.sh --add-config syntax: comma separated; a value with commas goes in [...]."""
    return ",".join(f"{key}=[{value}]" if "," in value else f"{key}={value}" for key, value in sorted(configs.items()))


def java_regex_alternation(names: list[str]) -> str:
    # Backslash before every non-alphanumeric character is a literal in Java regular expressions.
    return "|".join("".join(c if c.isalnum() else "\\" + c for c in name) for name in names)


def _script(topology: Topology, topics: tuple[TopicSpec, ...]) -> str:
    variable, default = env_setting(topology.kafka.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    regex = java_regex_alternation([t.name for t in topics])
    rows = [
        {
            "name": shlex.quote(t.name),
            "partitions": t.partitions,
            "replicas": t.replication_factor,
            "add_config": shlex.quote(add_config(dict(t.configs))),
            "configs": [shlex.quote(pair) for pair in config_arguments(dict(t.configs))],
        }
        for t in topics
    ]
    return render(
        "kafka/topics.sh.j2",
        topology=topology.name,
        bootstrap_variable=variable,
        bootstrap_default=shlex.quote(default) if default is not None else None,
        topics_regex=shlex.quote(regex) if len(regex) <= MAX_REGEX else None,
        topics=rows,
    )


def desired_state_document(topology: Topology, topics: tuple[TopicSpec, ...]) -> dict[str, Any]:
    return {
        "format": DESIRED_STATE_FORMAT,
        "topology": topology.name,
        "topics": [
            {
                "name": t.name,
                "partitions": t.partitions,
                "replication_factor": t.replication_factor,
                "configs": dict(sorted(t.configs.items())),
                "owner": t.owner(topology.name),
            }
            for t in topics
        ],
    }


def _manifests(topology: Topology, topics: tuple[TopicSpec, ...]) -> str:
    names = resource_names(t.name for t in topics)
    rows = [
        {
            "resource": names[t.name],
            "topic": quoted(t.name),
            "partitions": t.partitions,
            "replicas": t.replication_factor,
            "config": json.dumps(dict(sorted(t.configs.items()))),
        }
        for t in topics
    ]
    return render(
        "k8s/kafka/kafkatopics.yaml.j2",
        api_version=STRIMZI_API_VERSION,
        topology=topology.name,
        cluster=json.dumps(label_value(topology.name)),
        part_of=json.dumps(label_value(topology.name)),
        topics=rows,
    )


def emit(topology: Topology) -> dict[str, str]:
    topics = kafka_topics(topology)
    return {
        DESIRED_STATE: pretty(desired_state_document(topology, topics)),
        MANIFESTS: _manifests(topology, topics),
        SCRIPT: _script(topology, topics),
    }
