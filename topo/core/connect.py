"""Connection settings for the provisioning clients, taken from the model's `${VAR}` references.

Everything is expanded from the environment when a command runs; nothing here is written to a
file. TLS and SASL material comes only from the environment (see README, "Provisioning the brokers").
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from topo.core.interpolate import REFERENCE, expand, references
from topo.core.model import Topology

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


def kafka_admin_config(topology: Topology, env: Mapping[str, str] | None = None) -> dict[str, str]:
    environment = os.environ if env is None else env
    settings = topology.kafka
    config = {"bootstrap.servers": expand(settings.bootstrap_servers, environment)}
    protocol = expand(settings.security_protocol, environment).strip().upper()
    if protocol and protocol != "PLAINTEXT":
        config["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = expand(settings.sasl_mechanism, environment)
        config["sasl.username"] = expand(settings.sasl_username, environment)
        config["sasl.password"] = expand(settings.sasl_password, environment)
    for variable, key in KAFKA_ENV_SETTINGS.items():
        if environment.get(variable):
            config[key] = environment[variable]
    return config


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
    amqp = urllib.parse.urlsplit(expand(topology.rabbitmq.url, environment))

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
