"""Contract with the runtime: after `topo apply`, the runtime's own AMQP declarations
(topo.runtime.transport.rabbitmq.declare) are accepted by RabbitMQ and add nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika

from tests.provision.helpers import Cli, rabbit_state, small_doc, write
from topo.generator.load import load_topology


def test_runtime_redeclares_what_topo_apply_created(cli: Cli, tmp_path: Path, unique_name: str, rabbit_env: str,
                                                    rabbit_vhost: Any, rabbitmq_management: Any) -> None:
    from topo.runtime.transport.rabbitmq import declare

    path = write(tmp_path, small_doc(unique_name))
    assert cli("apply", "--topology", path, "--broker", "rabbitmq", "--yes")[0] == 0
    before = rabbit_state(rabbitmq_management, rabbit_env)

    connection = pika.BlockingConnection(pika.URLParameters(rabbit_vhost.url))
    try:
        declare.declare(connection.channel(), load_topology(path))  # a 406 would raise here
    finally:
        connection.close()
    assert rabbit_state(rabbitmq_management, rabbit_env) == before
