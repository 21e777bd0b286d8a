"""Broker connection settings for every client topo opens, from the model's `${VAR}` references.

One builder per broker, used by the runtime, the lag monitor and provisioning alike: Kafka
(`kafka_config`: bootstrap servers, SASL, TLS with a private CA, client certificate and key) and
RabbitMQ (`amqp_endpoint` for AMQP incl. `amqps` with a CA; `rabbit_target` for the management
API). Everything is expanded from the environment when a command runs; nothing here is written
to a file. TLS and SASL material comes only from the environment.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from topo.core.interpolate import REFERENCE, expand, references
from topo.core.model import KafkaSettings, RabbitSettings, Topology

# librdkafka settings read from the environment when set (TLS client material, SASL over TLS).
KAFKA_ENV_SETTINGS = {
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
    "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "ssl.endpoint.identification.algorithm",
}


def env_setting(value: str, fallback: str) -> tuple[str, str | None]:
    """The environment variable and default a generated script should use for a model setting.

    `${NAME:-default}` -> (NAME, default); a literal -> (fallback, literal); anything else
    (several references, no default) -> (fallback, None): the script then requires the variable.
    """
    found = references(value)
    if len(found) == 1 and REFERENCE.fullmatch(value):
        return found[0].name, found[0].default
    if not found and "$" not in value:
        return fallback, value
    return fallback, None


def without_userinfo(url: str) -> str:
    """The URL with any `user:password@` removed: safe to print or to write into a file."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def kafka_config(settings: KafkaSettings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings shared by every Kafka client (producer, consumer, admin, lag reader)."""
    environment = os.environ if env is None else env
    config = {"bootstrap.servers": expand(settings.bootstrap_servers, environment)}
    protocol = expand(settings.security_protocol, environment).strip().upper() or "PLAINTEXT"
    config["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = expand(settings.sasl_mechanism, environment)
        config["sasl.username"] = expand(settings.sasl_username, environment)
        config["sasl.password"] = expand(settings.sasl_password, environment)
    for variable, key in KAFKA_ENV_SETTINGS.items():
        if environment.get(variable):
            config[key] = environment[variable]
    return config


# TLS material for AMQP over TLS (`amqps://`), read from the environment when set.
RABBITMQ_SSL_ENV = {
    "ca_file": "RABBITMQ_SSL_CA_FILE",
    "cert_file": "RABBITMQ_SSL_CERT_FILE",
    "key_file": "RABBITMQ_SSL_KEY_FILE",
    "key_password": "RABBITMQ_SSL_KEY_PASSWORD",
}


@dataclass(frozen=True)
class TlsFiles:
    """A CA bundle to trust and, for mutual TLS, a client certificate and key (paths)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None

    def __repr__(self) -> str:  # never print the key password
        return f"TlsFiles(ca_file={self.ca_file!r}, cert_file={self.cert_file!r}, key_file={self.key_file!r})"

    def context(self) -> ssl.SSLContext:
        """A verifying client context: the CA given here (else the system's), hostname checked."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
        return context


@dataclass(frozen=True)
class AmqpEndpoint:
    """Where an AMQP client connects: the expanded URL and, for `amqps`, the TLS material."""

    url: str
    tls: TlsFiles | None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    def __repr__(self) -> str:  # never print the password
        return f"AmqpEndpoint(url={without_userinfo(self.url)!r}, tls={self.tls!r})"


def amqp_urls(url: str) -> list[str]:
    """The node URLs of an AMQP URL setting: one URL, or a cluster's nodes separated by commas
    (`amqp://u:p@host1:5672/%2F,amqp://u:p@host2:5672/%2F`)."""
    return [part.strip() for part in url.split(",") if part.strip()] or [url]


def amqp_endpoint(settings: RabbitSettings, env: Mapping[str, str] | None = None) -> AmqpEndpoint:
    """The AMQP URL expanded from the environment; TLS material for `amqps://` URLs."""
    environment = os.environ if env is None else env
    url = expand(settings.url, environment)
    if urllib.parse.urlsplit(url).scheme.lower() != "amqps":
        return AmqpEndpoint(url=url, tls=None)
    files = {field: environment.get(variable) or None for field, variable in RABBITMQ_SSL_ENV.items()}
    return AmqpEndpoint(url=url, tls=TlsFiles(**files))


@dataclass(frozen=True)
class RabbitTarget:
    """Where the management API is, who we are, and which vhost we provision."""

    url: str  # base URL without credentials
    user: str
    password: str
    vhost: str
    verify: str | bool  # requests' `verify`: a CA bundle path or True

    def __repr__(self) -> str:  # never print the password
        return f"RabbitTarget(url={self.url!r}, user={self.user!r}, vhost={self.vhost!r})"


def rabbit_target(topology: Topology, env: Mapping[str, str] | None = None) -> RabbitTarget:
    """The management API and vhost of the topology's RabbitMQ.

    Credentials: the management URL's `user:password@`, else RABBITMQ_MANAGEMENT_USER /
    RABBITMQ_MANAGEMENT_PASSWORD, else those of the AMQP URL. Vhost: RABBITMQ_VHOST, else the
    AMQP URL's (the one the runtime connects to), else "/".
    """
    environment = os.environ if env is None else env
    management = urllib.parse.urlsplit(expand(topology.rabbitmq.management_url, environment))
    amqp = urllib.parse.urlsplit(amqp_urls(expand(topology.rabbitmq.url, environment))[0])  # a cluster's first node

    def unquote(value: str | None) -> str | None:
        return urllib.parse.unquote(value) if value is not None else None

    user = (unquote(management.username) or environment.get("RABBITMQ_MANAGEMENT_USER")
            or unquote(amqp.username) or "")
    password = (unquote(management.password) or environment.get("RABBITMQ_MANAGEMENT_PASSWORD")
                or unquote(amqp.password) or "")
    vhost = environment.get("RABBITMQ_VHOST") or (urllib.parse.unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/")
    base = without_userinfo(urllib.parse.urlunsplit((management.scheme, management.netloc,
                                                     management.path.rstrip("/"), "", "")))
    ca = environment.get("RABBITMQ_MANAGEMENT_CACERT") or environment.get("REQUESTS_CA_BUNDLE")
    return RabbitTarget(url=base, user=user, password=password, vhost=vhost, verify=ca or True)
