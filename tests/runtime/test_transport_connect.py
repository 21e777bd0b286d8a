"""The transports' clients take their connection settings from the core (`topo.core.connect`):
Kafka's TLS files from KAFKA_SSL_*, RabbitMQ's `amqps` CA from RABBITMQ_SSL_*. Broker-free: what
is checked is the configuration the clients are built with (TLS listeners are exercised by the
end-to-end TLS tests)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from topo.core.model import KafkaSettings, RabbitSettings
from topo.runtime.transport.base import TransportError
from topo.runtime.transport.kafka.config import client_config
from topo.runtime.transport.rabbitmq.connection import connection_parameters

RABBIT = RabbitSettings(url="${TEST_AMQP_URL}", management_url="http://127.0.0.1:15672", exchange="t.events",
                        partitions=2, key_header="x-topo-key")
KAFKA = KafkaSettings(bootstrap_servers="${TEST_BOOTSTRAP:-127.0.0.1:9093}", security_protocol="SSL",
                      sasl_mechanism="", sasl_username="", sasl_password="", partitions=1, replication_factor=1)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate of our own (nothing in the system store knows it)."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=topo test CA", "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem")],
                   check=True, capture_output=True)
    return folder / "ca.pem"


def test_amqps_verifies_the_broker_with_the_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                     ca_file: Path) -> None:
    monkeypatch.setenv("TEST_AMQP_URL", "amqps://app:secret@rabbit.example:5671/%2F")
    monkeypatch.setenv("RABBITMQ_SSL_CA_FILE", str(ca_file))
    params = connection_parameters(RABBIT, "consumer workers")
    assert params.ssl_options is not None
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert [dict(entry[0] for entry in ca["subject"]) for ca in context.get_ca_certs()] == [
        {"commonName": "topo test CA"}]
    assert (params.host, params.port) == ("rabbit.example", 5671)
    assert params.client_properties is not None
    assert str(params.client_properties["connection_name"]).startswith("topo consumer workers pid ")


def test_plain_amqp_has_no_tls(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    monkeypatch.setenv("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    monkeypatch.setenv("RABBITMQ_SSL_CA_FILE", str(ca_file))
    assert connection_parameters(RABBIT, "publisher").ssl_options is None


def test_an_explicit_url_overrides_the_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_AMQP_URL", raising=False)
    params = connection_parameters(RABBIT, "tail", "amqp://guest:guest@other.example:5673/vh")
    assert (params.host, params.port, params.virtual_host) == ("other.example", 5673, "vh")


def test_connection_errors_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TEST_AMQP_URL", raising=False)
    with pytest.raises(TransportError, match=r"broker\.rabbitmq\.url.*TEST_AMQP_URL"):
        connection_parameters(RABBIT, "consumer")
    monkeypatch.setenv("TEST_AMQP_URL", "amqps://rabbit.example/%2F")
    monkeypatch.setenv("RABBITMQ_SSL_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(TransportError, match="RABBITMQ_SSL_"):
        connection_parameters(RABBIT, "consumer")


def test_kafka_clients_get_the_tls_files_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/etc/topo/ca.pem")
    monkeypatch.setenv("KAFKA_SSL_CERTIFICATE_LOCATION", "/etc/topo/client.pem")
    monkeypatch.setenv("KAFKA_SSL_KEY_LOCATION", "/etc/topo/client.key")
    config = client_config(KAFKA, "topo-tail-1")
    assert config["client.id"] == "topo-tail-1"
    assert config["bootstrap.servers"] == "127.0.0.1:9093" and config["security.protocol"] == "SSL"
    assert (config["ssl.ca.location"], config["ssl.certificate.location"], config["ssl.key.location"]) == (
        "/etc/topo/ca.pem", "/etc/topo/client.pem", "/etc/topo/client.key")
