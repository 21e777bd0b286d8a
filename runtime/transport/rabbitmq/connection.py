"""Connecting to RabbitMQ: pika parameters from the core's AMQP endpoint, and error wording.

Every client the transport opens (publisher, consumer, tail, dead-letter reader, provisioning)
connects through `connection_parameters`, so `amqps://` with a private CA (RABBITMQ_SSL_*) works
for all of them alike.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions

from topo.core.connect import AmqpEndpoint, TlsFiles, amqp_endpoint, amqp_urls
from topo.core.interpolate import UnsetVariableError
from topo.core.model import RabbitSettings
from topo.runtime.transport.base import BrokerRefused, BrokerUnreachable, TransportError

CONNECT_TIMEOUT = 8.0  # seconds: socket connect and AMQP handshake, so every command answers within 15 s
AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
# add_callback_threadsafe on a connection whose I/O loop already ended
CLOSED_LOOP_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, RuntimeError)
CHECK_URL = "check broker.rabbitmq.url / RABBITMQ_URL and that the broker runs"


def connection_parameters(settings: RabbitSettings, role: str, url: str | None = None) -> pika.URLParameters:
    """pika parameters of the first node of the topology's (still `${VAR}`-templated) URL, or of
    `url` (same syntax) when given; see `node_parameters`."""
    return node_parameters(settings, role, url).all[0]


def node_parameters(settings: RabbitSettings, role: str, url: str | None = None) -> Nodes:
    """pika parameters of every node of the topology's (still `${VAR}`-templated) URL, or of `url`
    (same syntax) when given: one URL, or a cluster's node URLs separated by commas; named `role`
    for diagnostics. `amqps://` URLs verify the broker with the CA (and present the client
    certificate) that RABBITMQ_SSL_* name, checking the URL's host name, unless the URL has pika's
    own `ssl_options` query argument."""
    if url is not None:
        settings = settings.model_copy(update={"url": url})
    try:
        endpoint = amqp_endpoint(settings)
    except UnsetVariableError as error:
        raise TransportError(f"RabbitMQ url {settings.url!r} (broker.rabbitmq.url): {error}") from error
    return Nodes([_parameters(node_url, endpoint, role) for node_url in amqp_urls(endpoint.url)])


def _parameters(url: str, endpoint: AmqpEndpoint, role: str) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except Exception as error:  # pika raises ValueError/TypeError subclasses for bad query options
        raise TransportError(f"RabbitMQ url in broker.rabbitmq.url is invalid: {error}") from error
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    tls = endpoint.tls if parts.scheme.lower() == "amqps" else None
    if tls is None and parts.scheme.lower() == "amqps":
        tls = TlsFiles()
    if tls is not None and "ssl_options" not in query:
        try:
            params.ssl_options = pika.SSLOptions(tls.context(), server_hostname=parts.hostname or endpoint.host)
        except (OSError, ValueError) as error:  # unreadable or mismatched CA, certificate or key files
            raise TransportError(f"RabbitMQ TLS files {tls!r} (RABBITMQ_SSL_*) are unusable: "
                                 f"{describe(error)}") from error
    if "socket_timeout" not in query:
        params.socket_timeout = CONNECT_TIMEOUT
    if "stack_timeout" not in query:
        params.stack_timeout = CONNECT_TIMEOUT
    properties = dict(params.client_properties or {})
    properties["connection_name"] = f"topo {role} pid {os.getpid()}"
    params.client_properties = properties
    return params


class Nodes:
    """The nodes a client may connect to, tried in turn: the one that answered last comes first
    (a node that went away is not waited for again at every reconnect)."""

    def __init__(self, params: Sequence[pika.URLParameters]) -> None:
        if not params:
            raise TransportError("RabbitMQ url in broker.rabbitmq.url names no node")
        self.all = tuple(params)
        self._first = 0

    def ordered(self) -> list[pika.URLParameters]:
        return [*self.all[self._first:], *self.all[:self._first]]

    def answered(self, params: pika.URLParameters) -> None:
        self._first = self.all.index(params)

    def next_after(self, params: pika.URLParameters) -> pika.URLParameters:
        return self.all[(self.all.index(params) + 1) % len(self.all)]

    @property
    def credentials(self) -> Any:
        return self.all[0].credentials

    @property
    def virtual_host(self) -> str:
        return str(self.all[0].virtual_host)


def where(params: pika.URLParameters | Nodes) -> str:
    """Broker address(es) for messages: never the credentials."""
    if isinstance(params, Nodes):
        addresses = ", ".join(f"{node.host}:{node.port}" for node in params.all)
        return f"RabbitMQ at {addresses} vhost {params.virtual_host!r}"
    return f"RabbitMQ at {params.host}:{params.port} vhost {params.virtual_host!r}"


def describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


def connect_failure(params: pika.URLParameters | Nodes, error: BaseException) -> BrokerUnreachable | BrokerRefused:
    """One line for a connection that could not be opened: refused address (BrokerUnreachable:
    worth retrying), refused credentials (the user is named, never the password), unknown vhost or
    an untrusted certificate (BrokerRefused: retrying does not help), with the setting to fix."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        reason = f"the broker refused the credentials of user {params.credentials.username!r}"
        fix = "fix the user and password in RABBITMQ_URL (broker.rabbitmq.url)"
        return BrokerRefused(f"rabbitmq: cannot connect to {where(params)}: {reason}; {fix}")
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        reason = f"vhost {params.virtual_host!r} does not exist or user {params.credentials.username!r} may not use it"
        fix = "fix the vhost in RABBITMQ_URL (broker.rabbitmq.url) or grant the user access"
        return BrokerRefused(f"rabbitmq: cannot connect to {where(params)}: {reason}; {fix}")
    cause = error.args[0] if isinstance(error, pika.exceptions.AMQPConnectionError) and error.args else error
    inner = getattr(cause, "exception", None) or cause  # pika wraps the socket error
    if isinstance(inner, ssl.SSLCertVerificationError):
        return BrokerRefused(f"rabbitmq: cannot connect to {where(params)}: it presented a certificate this client "
                             f"does not trust (certificate verify failed: {inner.verify_message}); set "
                             "RABBITMQ_SSL_CA_FILE to the CA file that signed it")
    reason = (str(inner.strerror) if isinstance(inner, OSError) and inner.strerror
              else str(inner) or type(inner).__name__)
    fix = "start the broker or point RABBITMQ_URL (broker.rabbitmq.url) at it"
    return BrokerUnreachable(f"rabbitmq: cannot connect to {where(params)}: {reason}; {fix}")


def connect(params: pika.URLParameters | Nodes) -> pika.BlockingConnection:
    """A connection to the node, or to the first of `Nodes` that answers (the last one that did
    first). Refused credentials or an untrusted certificate end the search at once: every node of
    a cluster has the same users and certificate authority."""
    if isinstance(params, pika.URLParameters):
        try:
            return pika.BlockingConnection(params)
        except AMQP_ERRORS as error:
            raise connect_failure(params, error) from error
    failure: BrokerUnreachable | BrokerRefused | None = None
    for node in params.ordered():
        try:
            connection = pika.BlockingConnection(node)
        except AMQP_ERRORS as error:
            failure = connect_failure(node if len(params.all) == 1 else params, error)
            if isinstance(failure, BrokerRefused):
                raise failure from error
            continue
        params.answered(node)
        return connection
    assert failure is not None
    raise failure
