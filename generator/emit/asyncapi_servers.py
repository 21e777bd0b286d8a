"""The AsyncAPI document's servers: one per broker, from the topology's connection settings.

A `${VAR}` / `${VAR:-default}` reference in a host becomes an AsyncAPI server variable (`{VAR}`),
its default the variable's default; credentials are never written: an AMQP URL's `user:password@`
is dropped, and security schemes only say which mechanism the defaults select.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from topo.core.interpolate import REFERENCE, UnsetVariableError, expand, references
from topo.core.model import BrokerKind, Topology

KAFKA_SERVER = "kafka"
RABBITMQ_SERVER = "rabbitmq"
AMQP_PROTOCOL_VERSION = "0-9-1"
BROKER_NAMES = {BrokerKind.KAFKA: "Kafka", BrokerKind.RABBITMQ: "RabbitMQ"}
AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
# librdkafka's sasl.mechanism -> the AsyncAPI security scheme type.
SASL_SCHEMES = {"PLAIN": "plain", "SCRAM-SHA-256": "scramSha256", "SCRAM-SHA-512": "scramSha512",
                "GSSAPI": "gssapi"}
KAFKA_SECURITY = "kafka-sasl"
RABBITMQ_SECURITY = "rabbitmq-user"
# A reference stands in as this token while a URL is split, so urlsplit sees a plain host name.
_TOKEN = "topovar{}x"
_TOKEN_PATTERN = re.compile(r"topovar(\d+)x")


def default_of(setting: str) -> str | None:
    """The value a setting takes with an empty environment; None when a reference has no default."""
    try:
        return expand(setting, {})
    except UnsetVariableError:
        return None


def variable(name: str, default: str | None, meaning: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if default is not None:
        entry["default"] = default
    entry["description"] = meaning
    return entry


def templated(setting: str, meaning: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The setting with each reference written `{VAR}`, and those references as server variables."""
    variables: dict[str, dict[str, Any]] = {}

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        default = match.group("default") if match.group("op") else None
        variables.setdefault(name, variable(name, default, f"{meaning}: the environment variable {name}"))
        return "{" + name + "}"

    return REFERENCE.sub(substitute, setting), variables


def kafka_server(topology: Topology) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Kafka server and the security schemes it uses."""
    kafka = topology.kafka
    host, variables = templated(kafka.bootstrap_servers, "bootstrap servers (host:port, comma separated)")
    protocol = (default_of(kafka.security_protocol) or "PLAINTEXT").strip().upper()
    server: dict[str, Any] = {
        "host": host,
        "protocol": "kafka-secure" if protocol in ("SSL", "SASL_SSL") else "kafka",
        "description": describe(topology, BrokerKind.KAFKA,
                                f"Security protocol `{kafka.security_protocol}` (librdkafka's security.protocol)."),
    }
    if variables:
        server["variables"] = variables
    schemes: dict[str, Any] = {}
    mechanism = (default_of(kafka.sasl_mechanism) or "").strip().upper()
    if protocol.startswith("SASL") and mechanism in SASL_SCHEMES:
        schemes[KAFKA_SECURITY] = {
            "type": SASL_SCHEMES[mechanism],
            "description": f"SASL {mechanism}; user and password come from `{kafka.sasl_username}` and "
                           f"`{kafka.sasl_password}` at connect time, never from this document.",
        }
        server["security"] = [{"$ref": f"#/components/securitySchemes/{KAFKA_SECURITY}"}]
    return server, schemes


def with_port(netloc: str, scheme: str) -> str:
    """host[:port] with the scheme's default port when none is given (IPv6 hosts in brackets)."""
    return netloc if ":" in netloc.rpartition("]")[2] else f"{netloc}:{AMQP_PORTS[scheme]}"


def amqp_address(url: str) -> tuple[str, str, str, dict[str, dict[str, Any]]]:
    """(protocol, host, pathname, variables) of an AMQP URL setting, without its credentials."""
    found = references(url)
    if len(found) == 1 and REFERENCE.fullmatch(url):
        # The whole URL comes from one variable: its parts become variables named after what they are.
        whole = found[0]
        parts = urllib.parse.urlsplit(whole.default or "")
        scheme = parts.scheme.lower() if parts.scheme.lower() in AMQP_PORTS else "amqp"
        netloc = parts.netloc.rpartition("@")[2]
        host_default = with_port(netloc, scheme) if netloc else None
        vhost_default = parts.path[1:] if len(parts.path) > 1 else "%2F"
        origin = f"of the AMQP URL in the environment variable {whole.name}"
        return scheme, "{host}", "/{vhost}", {
            "host": variable("host", host_default, f"host:port {origin} (its credentials are not part of this "
                                                   "document)"),
            "vhost": variable("vhost", vhost_default if whole.default else None,
                              f"virtual host {origin}, URL-encoded (`%2F` is `/`)"),
        }
    # A literal URL, or one with references inside: split it with each reference as a plain token.
    tokens = [m.group(0) for m in REFERENCE.finditer(url) if m.group(0) != "$$"]
    masked = url
    for index, text in enumerate(tokens):
        masked = masked.replace(text, _TOKEN.format(index), 1)
    parts = urllib.parse.urlsplit(masked)
    scheme = parts.scheme.lower() if parts.scheme.lower() in AMQP_PORTS else "amqp"
    netloc = with_port(parts.netloc.rpartition("@")[2], scheme)
    host, pathname = (_TOKEN_PATTERN.sub(lambda m: tokens[int(m.group(1))], text)
                      for text in (netloc, parts.path or "/"))
    host, host_variables = templated(host, "AMQP host")
    pathname, path_variables = templated(pathname, "AMQP virtual host")
    return scheme, host, pathname, {**host_variables, **path_variables}


def rabbitmq_server(topology: Topology) -> tuple[dict[str, Any], dict[str, Any]]:
    protocol, host, pathname, variables = amqp_address(topology.rabbitmq.url)
    server: dict[str, Any] = {
        "host": host,
        "pathname": pathname,
        "protocol": protocol,
        "protocolVersion": AMQP_PROTOCOL_VERSION,
        "description": describe(topology, BrokerKind.RABBITMQ,
                                f"Events are published to the topic exchange `{topology.rabbitmq.exchange}`."),
    }
    if variables:
        server["variables"] = variables
    server["security"] = [{"$ref": f"#/components/securitySchemes/{RABBITMQ_SECURITY}"}]
    schemes = {RABBITMQ_SECURITY: {
        "type": "userPassword",
        "description": "User and password of the AMQP URL, given at connect time, never in this document.",
    }}
    return server, schemes


def describe(topology: Topology, kind: BrokerKind, detail: str) -> str:
    role = ("the broker `topo run` uses unless told otherwise (`broker.kind`)" if topology.broker is kind
            else "used with `--broker " + kind.value + "`")
    return f"{BROKER_NAMES[kind]} of the {topology.name} topology: {role}. {detail}"


def servers(topology: Topology) -> tuple[dict[str, Any], dict[str, Any]]:
    """(servers, securitySchemes) of the document."""
    kafka, kafka_schemes = kafka_server(topology)
    rabbitmq, rabbitmq_schemes = rabbitmq_server(topology)
    return {KAFKA_SERVER: kafka, RABBITMQ_SERVER: rabbitmq}, {**kafka_schemes, **rabbitmq_schemes}
