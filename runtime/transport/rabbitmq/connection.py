"""Connecting to RabbitMQ: pika parameters from the core's AMQP endpoint, and error wording.

Every client the transport opens (publisher, consumer, tail, dead-letter reader, provisioning)
connects through `connection_parameters`, so `amqps://` with a private CA (RABBITMQ_SSL_*) works
for all of them alike.
"""

from __future__ import annotations

import os
import urllib.parse

import pika
import pika.exceptions

from topo.core.connect import amqp_endpoint
from topo.core.interpolate import UnsetVariableError
from topo.core.model import RabbitSettings
from topo.runtime.transport.base import BrokerUnreachable, TransportError

CONNECT_TIMEOUT = 8.0  # seconds: socket connect and AMQP handshake, so every command answers within 15 s
AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
# add_callback_threadsafe on a connection whose I/O loop already ended
CLOSED_LOOP_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, RuntimeError)
CHECK_URL = "check broker.rabbitmq.url / RABBITMQ_URL and that the broker runs"


def connection_parameters(settings: RabbitSettings, role: str, url: str | None = None) -> pika.URLParameters:
    """pika parameters for the topology's (still `${VAR}`-templated) URL, or `url` (same syntax)
    when given, named for diagnostics;
    `amqps://` URLs verify the broker with the CA (and present the client certificate) that
    RABBITMQ_SSL_* name, checking the URL's host name, unless the URL has pika's own
    `ssl_options` query argument."""
    if url is not None:
        settings = settings.model_copy(update={"url": url})
    try:
        endpoint = amqp_endpoint(settings)
    except UnsetVariableError as error:
        raise TransportError(f"RabbitMQ url {settings.url!r} (broker.rabbitmq.url): {error}") from error
    try:
        params = pika.URLParameters(endpoint.url)
    except Exception as error:  # pika raises ValueError/TypeError subclasses for bad query options
        raise TransportError(f"RabbitMQ url in broker.rabbitmq.url is invalid: {error}") from error
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(endpoint.url).query)
    if endpoint.tls is not None and "ssl_options" not in query:
        try:
            params.ssl_options = pika.SSLOptions(endpoint.tls.context(), server_hostname=endpoint.host)
        except (OSError, ValueError) as error:  # unreadable or mismatched CA, certificate or key files
            raise TransportError(f"RabbitMQ TLS files {endpoint.tls!r} (RABBITMQ_SSL_*) are unusable: "
                                 f"{describe(error)}") from error
    if "socket_timeout" not in query:
        params.socket_timeout = CONNECT_TIMEOUT
    if "stack_timeout" not in query:
        params.stack_timeout = CONNECT_TIMEOUT
    properties = dict(params.client_properties or {})
    properties["connection_name"] = f"topo {role} pid {os.getpid()}"
    params.client_properties = properties
    return params


def where(params: pika.URLParameters) -> str:
    """Broker address for messages: never the credentials."""
    return f"RabbitMQ at {params.host}:{params.port} vhost {params.virtual_host!r}"


def describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


def connect_failure(params: pika.URLParameters, error: BaseException) -> BrokerUnreachable:
    """One line for a connection that could not be opened: refused address, refused credentials
    (the user is named, never the password) or unknown vhost, with the setting to fix."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        reason = f"the broker refused the credentials of user {params.credentials.username!r}"
        fix = "fix the user and password in RABBITMQ_URL (broker.rabbitmq.url)"
    elif isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        reason = f"vhost {params.virtual_host!r} does not exist or user {params.credentials.username!r} may not use it"
        fix = "fix the vhost in RABBITMQ_URL (broker.rabbitmq.url) or grant the user access"
    else:
        cause = error.args[0] if isinstance(error, pika.exceptions.AMQPConnectionError) and error.args else error
        inner = getattr(cause, "exception", None) or cause  # pika wraps the socket error
        reason = (str(inner.strerror) if isinstance(inner, OSError) and inner.strerror
                  else str(inner) or type(inner).__name__)
        fix = "start the broker or point RABBITMQ_URL (broker.rabbitmq.url) at it"
    return BrokerUnreachable(f"rabbitmq: cannot connect to {where(params)}: {reason}; {fix}")


def connect(params: pika.URLParameters) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(params)
    except AMQP_ERRORS as error:
        raise connect_failure(params, error) from error
