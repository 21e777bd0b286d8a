"""Removing what a test's own topology left on the shared Kafka: its consumer groups and topics."""

from __future__ import annotations

import contextlib
from typing import Any


def delete_topology_leftovers(kafka_admin: Any, name: str) -> None:
    """Delete the consumer groups (`<name>.<group>`) and topics (`<name>...`) of topology `name`."""
    groups = [g.group_id for g in kafka_admin.list_consumer_groups(request_timeout=30).result(timeout=30).valid
              if g.group_id.startswith(f"{name}.")]
    if groups:
        for future in kafka_admin.delete_consumer_groups(groups, request_timeout=30).values():
            with contextlib.suppress(Exception):  # a group still leaving is deleted by retention
                future.result(timeout=30)
    topics = [topic for topic in kafka_admin.list_topics(timeout=30).topics if topic.startswith(name)]
    if topics:
        for future in kafka_admin.delete_topics(topics, operation_timeout=60).values():
            future.result(timeout=60)
