"""Message header names the runtime writes and reads: the same names on every broker.

Header values are always text (UTF-8 bytes on the wire). Kafka carries them as record headers,
RabbitMQ as AMQP message headers (strings). Times are RFC 3339 UTC with milliseconds
(`2024-01-01T00:00:00.000Z`); the retry due time is also given in epoch milliseconds so a
transport can compare it without parsing.
"""

from __future__ import annotations

from datetime import UTC, datetime

PREFIX = "x-topo-"

# The ordering key as text; RabbitMQ's consistent-hash exchange hashes on it (the model's
# `rabbitmq.key_header` is this name).
KEY = "x-topo-key"

# Written on every retry copy and every dead letter: where the event was first read.
ORIGINAL_TOPIC = "x-topo-original-topic"  # Kafka topic or RabbitMQ routing key of the event
ORIGINAL_PARTITION = "x-topo-original-partition"  # Kafka partition or RabbitMQ work queue index
ORIGINAL_OFFSET = "x-topo-original-offset"  # Kafka offset or RabbitMQ delivery tag
GROUP = "x-topo-group"  # consumer group that failed to handle it
ATTEMPT = "x-topo-attempt"  # handler attempts made so far (1 after the first failure)
ERROR_CLASS = "x-topo-error-class"  # qualified class name of the last exception
ERROR_MESSAGE = "x-topo-error-message"  # str() of the last exception, truncated
FIRST_FAILURE = "x-topo-first-failure"  # RFC 3339 UTC time of the first failed attempt
LAST_FAILURE = "x-topo-last-failure"  # RFC 3339 UTC time of the last failed attempt

# Retry copies only: when the copy becomes due (epoch milliseconds) and the delay it waits.
RETRY_DUE_MS = "x-topo-retry-due-ms"
RETRY_DELAY = "x-topo-retry-delay-seconds"

# Dead letters only: why it was dead-lettered (`max_retries` or `poison`).
DEAD_LETTER_REASON = "x-topo-dead-letter-reason"
REASON_MAX_RETRIES = "max_retries"
REASON_POISON = "poison"

# Replays (`topo dlq replay`): written on the re-published copy.
REPLAYED_AT = "x-topo-replayed-at"
REPLAYED_FROM = "x-topo-replayed-from"  # dead-letter topic or queue it was taken from

# W3C trace context (https://www.w3.org/TR/trace-context/): written by the publisher when given or
# traced, kept on every retry copy, dead letter and replay.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# CloudEvents 1.0 binary content mode (`envelope: cloudevents`): each attribute is a header named
# prefix + attribute. Kafka binding: `ce_`, data content type in `content-type`. RabbitMQ: `ce-` (the
# binding the `cloudevents` SDK implements for AMQP 0-9-1), content type in the AMQP `content_type`
# property. Readers also accept the AMQP 1.0 binding's `cloudEvents_` and `cloudEvents:`.
CLOUDEVENTS_KAFKA_PREFIX = "ce_"
CLOUDEVENTS_RABBITMQ_PREFIX = "ce-"
CLOUDEVENTS_PREFIXES = (CLOUDEVENTS_KAFKA_PREFIX, CLOUDEVENTS_RABBITMQ_PREFIX, "cloudEvents_", "cloudEvents:")
CLOUDEVENTS_ID_HEADERS = frozenset(prefix + "id" for prefix in CLOUDEVENTS_PREFIXES)
CLOUDEVENTS_SPECVERSION = "1.0"
CLOUDEVENTS_CHAIN_ID = "chainid"  # extension attribute: names must match ^[a-z0-9]+$
CONTENT_TYPE = "content-type"

MAX_ERROR_MESSAGE = 1000

# Headers that describe one failure history; dropped when an event is replayed as new.
FAILURE_HEADERS = (ATTEMPT, ERROR_CLASS, ERROR_MESSAGE, FIRST_FAILURE, LAST_FAILURE, RETRY_DUE_MS,
                   RETRY_DELAY, DEAD_LETTER_REASON)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_text() -> str:
    return format_time(datetime.now(UTC))


def error_class(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def error_message(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 3] + "..."
