"""Kafka transport (confluent-kafka / librdkafka), one module per unit.

* `config`: client settings from `topo.core.connect.kafka_config` (SASL, TLS files from
  KAFKA_SSL_*) plus the client id and producer tuning; messages <-> `Delivery`;
* `publisher`: the idempotent producer behind `Publisher`;
* `consumer`: a member of a consumer group (offsets, retry topics, exactly-once);
* `tail`, `dead_letters`: `topo tail`, `topo dlq list|replay`;
* `transport`: the `Transport` that opens all of them.
"""

from topo.runtime.transport.kafka.config import PRODUCER_TUNING, client_config
from topo.runtime.transport.kafka.consumer import KafkaConsumer
from topo.runtime.transport.kafka.dead_letters import KafkaDeadLetters
from topo.runtime.transport.kafka.publisher import KafkaPublisher
from topo.runtime.transport.kafka.tail import KafkaTail
from topo.runtime.transport.kafka.transport import KafkaTransport

__all__ = [
    "PRODUCER_TUNING",
    "KafkaConsumer",
    "KafkaDeadLetters",
    "KafkaPublisher",
    "KafkaTail",
    "KafkaTransport",
    "client_config",
]
