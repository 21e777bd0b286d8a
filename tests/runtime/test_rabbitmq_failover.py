"""RabbitMQ clients take the nodes of a comma-separated URL, the last one that answered first.

The failover itself (a node killed under a publisher and three consumers) is proven on the real
3-node cluster: tests/cluster/test_faults.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli.support import small_doc
from tests.runtime.topologies import compile_topology
from topo.runtime.transport.rabbitmq.connection import node_parameters


def test_a_url_list_names_every_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    topology = compile_topology(small_doc(f"fo{uuid.uuid4().hex[:8]}", ("indexer",)), tmp_path)
    urls = "amqp://u:p@127.0.0.1:5682/%2F, amqp://u:p@127.0.0.1:5683/%2F,amqp://u:p@127.0.0.1:5684/%2F"
    nodes = node_parameters(topology.rabbitmq, "publisher", urls)
    assert [(node.host, node.port) for node in nodes.ordered()] == [("127.0.0.1", p) for p in (5682, 5683, 5684)]
    nodes.answered(nodes.all[1])
    assert [node.port for node in nodes.ordered()] == [5683, 5684, 5682]
