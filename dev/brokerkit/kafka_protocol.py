"""A raw Kafka Metadata request (standard library only): does a broker answer, with which topics."""

from __future__ import annotations

import dataclasses
import socket
import struct

from dev.brokerkit.settings import kafka_bootstrap


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def _kafka_call(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    client_id = b"topo-dev-brokers"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    message = header + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    (got,) = struct.unpack(">i", response[:4])
    if got != correlation:
        raise ConnectionError(f"correlation id {got} != {correlation}")
    return response[4:]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take("h")
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value

    def int32_array(self) -> None:
        count = self.take("i")
        self.pos += 4 * max(count, 0)


@dataclasses.dataclass
class KafkaMetadata:
    brokers: list[tuple[int, str, int]]
    cluster_id: str | None
    topics: list[str]


def kafka_metadata(host: str, port: int, timeout: float = 3.0) -> KafkaMetadata:
    """Ask a Kafka broker for its metadata with a raw Metadata request (v4..v7, whichever it serves)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0 is served by every broker version; it tells which Metadata versions exist.
        reader = _Reader(_kafka_call(sock, 18, 0, 1, b""))
        error = reader.take("h")
        if error:
            raise ConnectionError(f"ApiVersions error {error}")
        ranges = {}
        for _ in range(reader.take("i")):
            key, low, high = reader.take("h"), reader.take("h"), reader.take("h")
            ranges[key] = (low, high)
        low, high = ranges.get(3, (0, -1))
        version = max(low, 4)
        if version > min(high, 7):
            raise ConnectionError(f"broker serves Metadata v{low}..v{high} only")
        body = struct.pack(">ib", -1, 0)  # all topics, allow_auto_topic_creation=false
        reader = _Reader(_kafka_call(sock, 3, version, 2, body))
    reader.take("i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take("i")):
        node = reader.take("i")
        broker_host = reader.string() or ""
        broker_port = reader.take("i")
        reader.string()  # rack
        brokers.append((node, broker_host, broker_port))
    cluster_id = reader.string()
    reader.take("i")  # controller id
    topics = []
    for _ in range(reader.take("i")):
        reader.take("h")  # error code
        name = reader.string() or ""
        internal = reader.take("b")
        for _ in range(reader.take("i")):
            reader.take("h")  # error code
            reader.take("i")  # partition
            reader.take("i")  # leader
            if version >= 7:
                reader.take("i")  # leader epoch
            reader.int32_array()  # replicas
            reader.int32_array()  # isr
            if version >= 5:
                reader.int32_array()  # offline replicas
        if not internal:
            topics.append(name)
    return KafkaMetadata(brokers=brokers, cluster_id=cluster_id, topics=sorted(topics))


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    first = first.split("://", 1)[-1]
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


def kafka_ready(bootstrap: str | None = None) -> KafkaMetadata | None:
    host, port = _split_bootstrap(bootstrap or kafka_bootstrap())
    try:
        metadata = kafka_metadata(host, port)
    except (OSError, ConnectionError, struct.error, UnicodeDecodeError):
        return None
    return metadata if metadata.brokers else None
