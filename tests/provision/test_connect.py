"""Connection settings come from the environment at run time; unit tests, no broker."""

from __future__ import annotations

from tests.provision.helpers import small_doc
from topo.core.connect import amqp_endpoint, env_setting, kafka_config, rabbit_target, without_userinfo
from topo.generator.resolve import resolve


def test_env_setting_follows_the_model_reference() -> None:
    reference = "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
    assert env_setting(reference, "X") == ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert env_setting("${MY_KAFKA}", "KAFKA_BOOTSTRAP_SERVERS") == ("MY_KAFKA", None)
    assert env_setting("kafka:9092", "KAFKA_BOOTSTRAP_SERVERS") == ("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert env_setting("${A}:${B}", "KAFKA_BOOTSTRAP_SERVERS") == ("KAFKA_BOOTSTRAP_SERVERS", None)


def test_rabbit_target_vhost_and_credentials() -> None:
    topology = resolve(small_doc("t-conn"))
    target = rabbit_target(topology, {"RABBITMQ_URL": "amqp://app:s%40cret@mq:5672/orders%2Fv1",
                                      "RABBITMQ_MANAGEMENT_URL": "https://mq:15671/"})
    assert (target.url, target.user, target.password, target.vhost) == ("https://mq:15671", "app", "s@cret",
                                                                        "orders/v1")
    assert "s@cret" not in repr(target)
    target = rabbit_target(topology, {"RABBITMQ_MANAGEMENT_URL": "http://admin:pw@mq:15672",
                                      "RABBITMQ_VHOST": "other"})
    assert (target.url, target.user, target.password, target.vhost) == ("http://mq:15672", "admin", "pw", "other")
    assert rabbit_target(topology, {}).vhost == "/"


def test_kafka_sasl_and_tls_come_from_the_environment() -> None:
    topology = resolve(small_doc("t-conn"))
    assert kafka_config(topology.kafka, {}) == {"bootstrap.servers": "127.0.0.1:9092",
                                              "security.protocol": "PLAINTEXT"}
    env = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_SSL_CA_LOCATION": "/ca.pem"}
    config = kafka_config(topology.kafka, env)
    assert config == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL",
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p",
                      "ssl.ca.location": "/ca.pem"}


def test_without_userinfo() -> None:
    assert without_userinfo("http://guest:guest@127.0.0.1:15672/x") == "http://127.0.0.1:15672/x"
    assert without_userinfo("http://127.0.0.1:15672") == "http://127.0.0.1:15672"



def test_amqps_takes_its_tls_material_from_the_environment() -> None:
    topology = resolve(small_doc("t-amqps"))
    assert amqp_endpoint(topology.rabbitmq, {}).tls is None
    env = {"RABBITMQ_URL": "amqps://u:secret@mq:5671/%2F", "RABBITMQ_SSL_CA_FILE": "/ca.pem",
           "RABBITMQ_SSL_KEY_PASSWORD": "kp"}
    endpoint = amqp_endpoint(topology.rabbitmq, env)
    assert endpoint.url == "amqps://u:secret@mq:5671/%2F" and endpoint.host == "mq"
    assert endpoint.tls is not None and endpoint.tls.ca_file == "/ca.pem" and endpoint.tls.cert_file is None
    assert "secret" not in repr(endpoint) and "kp" not in repr(endpoint)
