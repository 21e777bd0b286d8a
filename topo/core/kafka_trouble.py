"""Why a Kafka client got no metadata, in one line naming the broker and the setting to fix.

Every command reads the cluster's metadata before it relies on the broker (runtime probe, lag
reader, provisioning). librdkafka retries refused credentials and untrusted certificates like a
closed port, so a plain `list_topics(timeout)` waits the whole timeout and then says "cannot
reach". `metadata_within` asks in short slices and stops at the first failure that waiting does
not cure (SASL authentication, TLS verification), and `KafkaTrouble` words each case with its
own fix. No Kafka client is imported here: the caller passes its client's `list_topics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from topo.core.client_logs import KafkaClientLog
from topo.core.connect import env_setting
from topo.core.interpolate import expand
from topo.core.model import KafkaSettings

T = TypeVar("T")
SLICE = 0.5  # seconds per metadata request while waiting for an answer
# librdkafka's words for failures a retry does not cure.
AUTHENTICATION_FAILED = ("SASL authentication error", "Authentication failed", "SASL handshake failed")
UNTRUSTED_CERTIFICATE = ("certificate verify failed", "broker certificate could not be verified")
TLS_FAILED = ("SSL handshake failed",)


class KafkaTrouble(Exception):
    """The metadata did not come: `refused` when the broker answered but refused us (credentials,
    TLS), which the caller should report and give up on; else the broker was not reached."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


def is_refusal(reason: str) -> bool:
    """Does librdkafka's `reason` say the broker refused us (credentials or TLS), not that it is away?"""
    return any(words in reason for words in (*AUTHENTICATION_FAILED, *UNTRUSTED_CERTIFICATE, *TLS_FAILED))


def kafka_trouble(settings: KafkaSettings, servers: str, reason: str) -> KafkaTrouble:
    """One line: `kafka: ... at SERVERS ...: REASON; FIX`, the fix naming the variable to set."""
    if any(words in reason for words in AUTHENTICATION_FAILED):
        user_variable, _ = env_setting(settings.sasl_username, "KAFKA_SASL_USERNAME")
        password_variable, _ = env_setting(settings.sasl_password, "KAFKA_SASL_PASSWORD")
        mechanism_variable, _ = env_setting(settings.sasl_mechanism, "KAFKA_SASL_MECHANISM")
        user = _expanded(settings.sasl_username)
        mechanism = _expanded(settings.sasl_mechanism)
        return KafkaTrouble(
            f"kafka: the broker at {servers} refused the credentials of user {user!r} ({mechanism}); "
            f"fix {user_variable} / {password_variable} (broker.kafka.sasl_username, sasl_password) "
            f"or {mechanism_variable}", refused=True)
    if any(words in reason for words in UNTRUSTED_CERTIFICATE):
        return KafkaTrouble(
            f"kafka: the broker at {servers} presented a certificate this client does not trust "
            "(certificate verify failed); set KAFKA_SSL_CA_LOCATION to the CA file that signed it", refused=True)
    if any(words in reason for words in TLS_FAILED):
        protocol_variable, _ = env_setting(settings.security_protocol, "KAFKA_SECURITY_PROTOCOL")
        return KafkaTrouble(
            f"kafka: TLS with the broker at {servers} failed: {_short(reason)}; check {protocol_variable} "
            "(broker.kafka.security_protocol) and KAFKA_SSL_*", refused=True)
    variable, _ = env_setting(settings.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
    return KafkaTrouble(f"kafka: cannot reach the broker at {servers} ({variable}, broker.kafka.bootstrap_servers): "
                        f"{reason}; start the broker or point {variable} at it", refused=False)


def metadata_within(list_topics: Callable[[float], T], serve_logs: Callable[[], object], client_log: KafkaClientLog,
                    settings: KafkaSettings, servers: str, timeout: float) -> T:
    """`list_topics(seconds)` until it answers, for at most `timeout` seconds; KafkaTrouble when
    it does not, at once when `client_log` reports a refusal (credentials, TLS) meanwhile."""
    seen = client_log.failures
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return list_topics(max(0.05, min(SLICE, remaining)))
        except Exception as error:  # the client's own exception type (KafkaException) is not imported here
            serve_logs()  # the client's logs say why
            failure = client_log.last_failure if client_log.failures > seen else None
            if (failure is not None and is_refusal(failure)) or time.monotonic() >= deadline:
                raise kafka_trouble(settings, servers, failure or client_log.last_failure or str(error)) from None


def _expanded(value: str) -> str:
    try:
        return expand(value)
    except Exception:  # an unset variable: the message names the variable, not its value
        return value


def _short(reason: str) -> str:
    """librdkafka's reason without its generic advice after the first sentence."""
    return reason.split(": broker certificate could not be verified")[0].split("; ")[0]
