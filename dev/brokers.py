"""Real brokers for development and tests: Apache Kafka (KRaft), RabbitMQ and Prometheus.

Usage (from the repository root; standard library only, so any python3 >= 3.11 runs it)::

    python3 -m dev.brokers up     [kafka] [rabbitmq] [prometheus]
    python3 -m dev.brokers down   [kafka] [rabbitmq] [prometheus]
    python3 -m dev.brokers status [kafka] [rabbitmq] [prometheus]

* Kafka: jars resolved from Maven Central by ``dev/kafka/pom.xml`` into a cache
  (``$TOPO_CACHE_DIR`` or ``~/.cache/topo``), one combined broker + controller on 127.0.0.1,
  data and logs under ``$TOPO_RUN_DIR/kafka`` (default ``<repo>/.run``); data survive ``down``/``up``.
* RabbitMQ: Debian's ``rabbitmq-server`` (installed with apt-get when missing) with the
  consistent-hash exchange, management and prometheus plugins; a node that already runs is reused.
* Prometheus: Debian's ``prometheus`` package (``promtool``); ``up`` only installs it.  Tests start
  servers on free ports with :func:`start_prometheus_server`.

``down`` stops only the processes that ``up`` started, by the pids it recorded.  Setting
``KAFKA_BOOTSTRAP_SERVERS`` or ``RABBITMQ_URL`` points everything at external brokers: ``up`` then
only checks that they answer and starts nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = Path(__file__).resolve().parent

KAFKA_VERSION = os.environ.get("TOPO_KAFKA_VERSION", "4.4.0")
KAFKA_HEAP = os.environ.get("TOPO_KAFKA_HEAP", "512m")
RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management", "rabbitmq_prometheus")
SERVICES = ("kafka", "rabbitmq", "prometheus")

KAFKA_START_TIMEOUT = 120.0
RABBITMQ_START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class BrokerError(RuntimeError):
    """A broker could not be installed, started, reached or stopped."""


# --------------------------------------------------------------------------- configuration


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def run_dir() -> Path:
    return Path(os.environ.get("TOPO_RUN_DIR") or REPO_ROOT / ".run").resolve()


def cache_dir() -> Path:
    explicit = os.environ.get("TOPO_CACHE_DIR")
    if explicit:
        return Path(explicit).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "topo"


def kafka_port() -> int:
    return _env_int("TOPO_KAFKA_PORT", 9092)


def kafka_controller_port() -> int:
    return _env_int("TOPO_KAFKA_CONTROLLER_PORT", 9093)


def rabbitmq_port() -> int:
    return _env_int("TOPO_RABBITMQ_PORT", 5672)


def kafka_bootstrap() -> str:
    """Bootstrap servers the tests should use (``KAFKA_BOOTSTRAP_SERVERS`` overrides)."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{kafka_port()}"


def rabbitmq_url() -> str:
    return os.environ.get("RABBITMQ_URL") or f"amqp://guest:guest@127.0.0.1:{rabbitmq_port()}/%2F"


def rabbitmq_management_url() -> str:
    return os.environ.get("RABBITMQ_MANAGEMENT_URL") or "http://127.0.0.1:15672"


def kafka_is_external() -> bool:
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


def rabbitmq_is_external() -> bool:
    return bool(os.environ.get("RABBITMQ_URL"))


def log(message: str) -> None:
    print(f"[brokers] {message}", flush=True)


# --------------------------------------------------------------------------- processes


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def owned_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid recorded in ``pid_file`` if that process still runs and is the one we started.

    The command line must contain every marker, so that a recycled pid is never taken for ours.
    """
    pid = _read_pid(pid_file)
    if pid is None or not _is_alive(pid):
        return None
    cmdline = _cmdline(pid)
    if all(marker in cmdline for marker in markers):
        return pid
    return None


def stop_pid(pid: int, what: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM one process, wait for it to exit, SIGKILL it after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        # A child spawned by this same Python process must be reaped, or it stays a zombie.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not _is_alive(pid):
            return
        if not killed and time.monotonic() > deadline:
            log(f"{what} (pid {pid}) did not stop within {timeout:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)


def spawn_detached(argv: Sequence[str], log_file: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session, detached from our terminal, output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 600, **kwargs: object) -> str:
    """Run a command, return its stdout; on failure raise BrokerError with the command and its output."""
    try:
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except FileNotFoundError as exc:
        raise BrokerError(f"command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise BrokerError(
            f"command failed (exit {result.returncode}): {' '.join(argv)}\n{result.stdout}{result.stderr}".rstrip()
        )
    return str(result.stdout)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialise concurrent ``up``/``down`` calls (several people share one checkout)."""
    path = run_dir() / "brokers.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- apt


def _apt_install(packages: Sequence[str]) -> None:
    missing = ", ".join(packages)
    if os.geteuid() != 0:
        raise BrokerError(f"{missing} not installed; install with: sudo apt-get install -y {' '.join(packages)}")
    if not shutil.which("apt-get"):
        raise BrokerError(f"{missing} not installed and there is no apt-get; install it by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = _run(["apt-cache", "policy", *packages], check=False, env=env)
    if "Candidate: (none)" in policy or policy.count("Candidate:") < len(packages):
        log("apt-get update")
        _run(["apt-get", "update", "-q"], env=env)
    log(f"apt-get install -y {' '.join(packages)}")
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env, timeout=900)


# --------------------------------------------------------------------------- Kafka protocol check


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


# --------------------------------------------------------------------------- Kafka


@dataclasses.dataclass(frozen=True)
class KafkaPaths:
    home: Path
    data: Path
    logs: Path
    config: Path
    pid_file: Path
    cluster_id: Path
    lib: Path

    @classmethod
    def current(cls) -> KafkaPaths:
        home = run_dir() / "kafka"
        return cls(
            home=home,
            data=home / "data",
            logs=home / "logs",
            config=home / "server.properties",
            pid_file=home / "kafka.pid",
            cluster_id=home / "cluster.id",
            lib=cache_dir() / f"kafka-{KAFKA_VERSION}" / "lib",
        )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("java not found: Kafka 4 needs a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
    return found


def ensure_kafka_jars(paths: KafkaPaths) -> None:
    marker = paths.lib.parent / "complete"
    if marker.exists():
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError("mvn not found: Maven resolves the Kafka jars (apt-get install maven)")
    staging = paths.lib.parent / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven into {paths.lib}")
    _run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(DEV_DIR / "kafka" / "pom.xml"),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        timeout=900,
    )
    shutil.rmtree(paths.lib, ignore_errors=True)
    staging.rename(paths.lib)
    marker.write_text(f"{KAFKA_VERSION}\n")


def _new_cluster_id() -> str:
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def _render_kafka_config(paths: KafkaPaths) -> None:
    template = string.Template((DEV_DIR / "kafka" / "server.properties.template").read_text())
    paths.config.write_text(
        template.substitute(
            port=kafka_port(),
            controller_port=kafka_controller_port(),
            data_dir=str(paths.data),
        )
    )


def _kafka_java_argv(paths: KafkaPaths, main_class: str, *args: str, heap: str = KAFKA_HEAP) -> list[str]:
    return [
        _java(),
        f"-Xms{heap}" if _size_mb(heap) <= 256 else "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j2.configurationFile={DEV_DIR / 'kafka' / 'log4j2.properties'}",
        "-cp",
        str(paths.lib / "*"),
        main_class,
        *args,
    ]


def _size_mb(size: str) -> float:
    """'512m' -> 512, '1g' -> 1024 (JVM size syntax)."""
    factors = {"k": 1 / 1024, "m": 1.0, "g": 1024.0}
    unit = size[-1:].lower()
    return float(size[:-1]) * factors[unit] if unit in factors else float(size) / (1024 * 1024)


def _format_kafka(paths: KafkaPaths) -> None:
    if (paths.data / "meta.properties").exists():
        return
    paths.data.mkdir(parents=True, exist_ok=True)
    if not paths.cluster_id.exists():
        paths.cluster_id.write_text(_new_cluster_id() + "\n")
    cluster = paths.cluster_id.read_text().strip()
    log(f"formatting KRaft storage {paths.data} (cluster id {cluster})")
    argv = _kafka_java_argv(
        paths, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(paths.config), heap="256m"
    )
    _run(argv, timeout=300)


def kafka_pid(paths: KafkaPaths | None = None) -> int | None:
    paths = paths or KafkaPaths.current()
    return owned_pid(paths.pid_file, "kafka.Kafka", str(paths.config))


def kafka_launch() -> int | None:
    """Start the Kafka broker if needed; returns the pid to wait for (None: nothing to wait for)."""
    if kafka_is_external():
        log(f"Kafka: external broker {kafka_bootstrap()} (KAFKA_BOOTSTRAP_SERVERS); not starting one")
        return None
    paths = KafkaPaths.current()
    pid = kafka_pid(paths)
    if pid is not None:
        return pid
    if kafka_ready() is not None:
        log(f"Kafka: reusing the broker already answering on {kafka_bootstrap()} (not started by us)")
        return None
    if port_open("127.0.0.1", kafka_port()) or port_open("127.0.0.1", kafka_controller_port()):
        raise BrokerError(
            f"port {kafka_port()} or {kafka_controller_port()} is taken by a process that is not a Kafka "
            "broker; set TOPO_KAFKA_PORT / TOPO_KAFKA_CONTROLLER_PORT"
        )
    ensure_kafka_jars(paths)
    for folder in (paths.home, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    _render_kafka_config(paths)
    _format_kafka(paths)
    argv = _kafka_java_argv(paths, "kafka.Kafka", str(paths.config))
    pid = spawn_detached(argv, paths.logs / "kafka.out", cwd=paths.home)
    paths.pid_file.write_text(f"{pid}\n")
    log(f"Kafka {KAFKA_VERSION}: started pid {pid} on 127.0.0.1:{kafka_port()}")
    return pid


def kafka_wait(pid: int | None, timeout: float = KAFKA_START_TIMEOUT) -> KafkaMetadata:
    paths = KafkaPaths.current()
    deadline = time.monotonic() + timeout
    while True:
        metadata = kafka_ready()
        if metadata is not None:
            return metadata
        if pid is not None and not _is_alive(pid):
            raise BrokerError(
                f"Kafka (pid {pid}) exited during start-up; {paths.logs}/kafka.out ends with:\n"
                + _tail(paths.logs / "kafka.out")
                + f"\n{paths.logs}/server.log ends with:\n"
                + _tail(paths.logs / "server.log")
            )
        if time.monotonic() > deadline:
            raise BrokerError(
                f"Kafka did not answer a metadata request on {kafka_bootstrap()} within {timeout:.0f}s; "
                f"see {paths.logs}/server.log:\n" + _tail(paths.logs / "server.log")
            )
        time.sleep(0.25)


def kafka_down() -> None:
    paths = KafkaPaths.current()
    pid = kafka_pid(paths)
    if pid is None:
        log("Kafka: no broker of ours is running")
    else:
        log(f"Kafka: stopping pid {pid}")
        stop_pid(pid, "Kafka")
    paths.pid_file.unlink(missing_ok=True)


def kafka_stop() -> None:
    """Stop the broker that ``up`` started (tests of broker restarts); its data stay."""
    with _lock():
        kafka_down()


def kafka_start(timeout: float = KAFKA_START_TIMEOUT) -> KafkaMetadata:
    """Start the local broker again (or keep the running one) and wait until it answers."""
    with _lock():
        return kafka_wait(kafka_launch(), timeout=timeout)


def kafka_status() -> bool:
    paths = KafkaPaths.current()
    pid = kafka_pid(paths)
    metadata = kafka_ready()
    if metadata is None:
        state = "NOT answering" + (f" (pid {pid} alive, starting?)" if pid else "")
    else:
        who = f"ours, pid {pid}" if pid else ("external" if kafka_is_external() else "not started by us")
        state = f"up ({who}), cluster {metadata.cluster_id}, {len(metadata.topics)} topics"
    log(f"Kafka {KAFKA_VERSION} {kafka_bootstrap()}: {state}")
    if not kafka_is_external():
        log(f"  data {paths.data}  logs {paths.logs}  jars {paths.lib}")
    return metadata is not None


# --------------------------------------------------------------------------- RabbitMQ


@dataclasses.dataclass(frozen=True)
class RabbitPaths:
    home: Path
    pid_file: Path
    epmd_pid_file: Path
    log: Path

    @classmethod
    def current(cls) -> RabbitPaths:
        home = run_dir() / "rabbitmq"
        return cls(
            home=home,
            pid_file=home / "rabbitmq.pid",
            epmd_pid_file=home / "epmd.pid",
            log=home / "start.log",
        )


def _rabbit_amqp_address() -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(rabbitmq_url())
    return parsed.hostname or "127.0.0.1", parsed.port or 5672


def rabbitmq_management_get(path: str, timeout: float = 3.0) -> object:
    parsed = urllib.parse.urlsplit(rabbitmq_management_url())
    user = urllib.parse.unquote(parsed.username or os.environ.get("RABBITMQ_MANAGEMENT_USER", "guest"))
    password = urllib.parse.unquote(parsed.password or os.environ.get("RABBITMQ_MANAGEMENT_PASSWORD", "guest"))
    base = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}{parsed.path.rstrip('/')}"
    request = urllib.request.Request(base + path)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _rabbit_overview() -> dict[str, object] | None:
    try:
        overview = rabbitmq_management_get("/api/overview")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return overview if isinstance(overview, dict) else None


def _rabbit_ctl(*args: str, timeout: float = 120, check: bool = True) -> str:
    return _run(["rabbitmqctl", *args], timeout=timeout, check=check)


def rabbitmq_pid(paths: RabbitPaths | None = None) -> int | None:
    paths = paths or RabbitPaths.current()
    return owned_pid(paths.pid_file, "beam", "rabbit")


def _enabled_plugins_file() -> Path:
    return Path(os.environ.get("RABBITMQ_ENABLED_PLUGINS_FILE", "/etc/rabbitmq/enabled_plugins"))


def _plugins_enabled() -> bool:
    try:
        text = _enabled_plugins_file().read_text()
    except OSError:
        return False
    return all(plugin in text for plugin in RABBITMQ_PLUGINS)


def pid_listening_on(port: int) -> int | None:
    """The pid of the process holding a listening TCP socket on ``port`` (found through /proc, as root)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def ensure_rabbitmq_installed(paths: RabbitPaths) -> None:
    if shutil.which("rabbitmq-server") or Path("/usr/sbin/rabbitmq-server").exists():
        return
    epmd_before = port_open("127.0.0.1", 4369)
    _apt_install(["rabbitmq-server"])
    # The package's maintainer scripts run Erlang, which leaves an epmd daemon behind: that one is
    # ours too, so that `down` leaves nothing of ours running.
    if not epmd_before and port_open("127.0.0.1", 4369):
        pid = pid_listening_on(4369)
        if pid is not None and "epmd" in _cmdline(pid):
            paths.epmd_pid_file.write_text(f"{pid}\n")


def _start_epmd(paths: RabbitPaths) -> None:
    """Run epmd in the foreground under our own pid, so that ``down`` can stop exactly it."""
    if port_open("127.0.0.1", 4369):
        return
    epmd = shutil.which("epmd") or "/usr/bin/epmd"
    pid = spawn_detached([epmd], paths.home / "epmd.log", cwd=paths.home)
    paths.epmd_pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", 4369):
        if time.monotonic() > deadline or not _is_alive(pid):
            raise BrokerError(f"epmd (pid {pid}) did not listen on 4369: {_tail(paths.home / 'epmd.log')}")
        time.sleep(0.1)


def rabbitmq_up() -> None:
    if rabbitmq_is_external():
        log("RabbitMQ: external broker (RABBITMQ_URL); not starting one")
        rabbitmq_wait(timeout=30)
        return
    paths = RabbitPaths.current()
    paths.home.mkdir(parents=True, exist_ok=True)
    host, port = _rabbit_amqp_address()
    if rabbitmq_pid(paths) is None and port_open(host, port):
        log(f"RabbitMQ: reusing the node already listening on {host}:{port} (not started by us)")
        if _rabbit_overview() is None and shutil.which("rabbitmqctl"):
            log(f"enabling {' '.join(RABBITMQ_PLUGINS)} on the running node")
            _run(["rabbitmq-plugins", "enable", *RABBITMQ_PLUGINS], timeout=120)
        rabbitmq_wait()
        return
    if rabbitmq_pid(paths) is None:
        ensure_rabbitmq_installed(paths)
        if not _plugins_enabled():
            log(f"rabbitmq-plugins enable --offline {' '.join(RABBITMQ_PLUGINS)}")
            _run(["rabbitmq-plugins", "enable", "--offline", *RABBITMQ_PLUGINS], timeout=120)
        _start_epmd(paths)
        env = {
            **os.environ,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(rabbitmq_port()),
        }
        log("RabbitMQ: rabbitmq-server -detached")
        _run(["rabbitmq-server", "-detached"], env=env, timeout=120)
        deadline = time.monotonic() + RABBITMQ_START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            out = _rabbit_ctl(
                "await_startup", "--timeout", str(max(5, int(remaining))), check=False, timeout=remaining + 10
            )
            if _rabbit_ctl("eval", "os:getpid().", check=False, timeout=30).strip().strip('"').isdigit():
                break
            if time.monotonic() > deadline:
                raise BrokerError(f"RabbitMQ did not start within {RABBITMQ_START_TIMEOUT:.0f}s: {out}")
            time.sleep(1)
        pid = int(_rabbit_ctl("eval", "os:getpid().", timeout=30).strip().strip('"'))
        paths.pid_file.write_text(f"{pid}\n")
        log(f"RabbitMQ: started pid {pid}")
    rabbitmq_wait()


def rabbitmq_wait(timeout: float = RABBITMQ_START_TIMEOUT) -> dict[str, object]:
    host, port = _rabbit_amqp_address()
    deadline = time.monotonic() + timeout
    while True:
        overview = _rabbit_overview()
        if overview is not None and port_open(host, port):
            return overview
        if time.monotonic() > deadline:
            raise BrokerError(
                f"RabbitMQ did not answer on {host}:{port} and {rabbitmq_management_url()} within {timeout:.0f}s"
            )
        time.sleep(0.25)


def rabbitmq_down() -> None:
    paths = RabbitPaths.current()
    pid = rabbitmq_pid(paths)
    if pid is None:
        log("RabbitMQ: no node of ours is running")
    else:
        log(f"RabbitMQ: stopping pid {pid}")
        stop_pid(pid, "RabbitMQ")
    paths.pid_file.unlink(missing_ok=True)
    epmd = owned_pid(paths.epmd_pid_file, "epmd")
    if epmd is not None:
        log(f"epmd: stopping pid {epmd}")
        stop_pid(epmd, "epmd", timeout=10)
    paths.epmd_pid_file.unlink(missing_ok=True)


def rabbitmq_status() -> bool:
    pid = rabbitmq_pid()
    overview = _rabbit_overview()
    host, port = _rabbit_amqp_address()
    if overview is None:
        state = "NOT answering" + (f" (pid {pid} alive)" if pid else "")
    else:
        who = f"ours, pid {pid}" if pid else ("external" if rabbitmq_is_external() else "not started by us")
        versions = f"RabbitMQ {overview.get('rabbitmq_version')}, Erlang {overview.get('erlang_version')}"
        state = f"up ({who}), {versions}"
    log(f"RabbitMQ amqp://{host}:{port} management {rabbitmq_management_url()}: {state}")
    return overview is not None


# --------------------------------------------------------------------------- Prometheus


def promtool_path() -> str | None:
    return shutil.which("promtool")


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def ensure_prometheus_installed() -> None:
    if not (promtool_path() and prometheus_binary()):
        _apt_install(["prometheus"])


def prometheus_version() -> str:
    binary = prometheus_binary()
    if not binary:
        return "not installed"
    first = _run([binary, "--version"], check=False, timeout=30).splitlines()
    return first[0] if first else "unknown"


@dataclasses.dataclass
class PrometheusServer:
    """A Prometheus server started for a test; ``stop()`` ends exactly this process."""

    pid: int
    port: int
    config_file: Path
    data_dir: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if _is_alive(self.pid):
            stop_pid(self.pid, "Prometheus", timeout=20)


def start_prometheus_server(
    config_file: Path,
    workdir: Path,
    *,
    port: int | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> PrometheusServer:
    """Start ``prometheus`` on 127.0.0.1 with ``config_file``; return once ``/-/ready`` answers 200.

    Rule files are whatever ``rule_files`` in the config names (relative paths are relative to the
    config file).  Storage and the log go under ``workdir``.  The lifecycle API is on, so a test can
    POST ``/-/reload``.
    """
    binary = prometheus_binary()
    if not binary:
        raise BrokerError("prometheus not installed: run `make brokers-up` (apt-get install -y prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data_dir = workdir / "prometheus-data"
    log_file = workdir / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
        *extra_args,
    ]
    pid = spawn_detached(argv, log_file, cwd=workdir)
    server = PrometheusServer(pid=pid, port=port, config_file=config_file, data_dir=data_dir, log_file=log_file)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return server
        except (OSError, urllib.error.URLError):
            pass
        if not _is_alive(pid) or time.monotonic() > deadline:
            server.stop()
            raise BrokerError(f"Prometheus did not become ready on {server.url}:\n{_tail(log_file)}")
        time.sleep(0.2)


def prometheus_status() -> bool:
    tool = promtool_path()
    log(f"Prometheus: {prometheus_version()}; promtool {tool or 'NOT installed'} (servers start per test)")
    return tool is not None


# --------------------------------------------------------------------------- CLI


def up(services: Sequence[str]) -> None:
    started = time.monotonic()
    with _lock():
        if "prometheus" in services:
            ensure_prometheus_installed()
        kafka_pid_to_wait = kafka_launch() if "kafka" in services else None
        if "rabbitmq" in services:
            rabbitmq_up()
        if "kafka" in services:
            kafka_wait(kafka_pid_to_wait)
    log(f"ready in {time.monotonic() - started:.1f}s: {', '.join(services)}")
    status(services)


def down(services: Sequence[str]) -> None:
    with _lock():
        if "kafka" in services:
            kafka_down()
        if "rabbitmq" in services:
            rabbitmq_down()
        if "prometheus" in services:
            log("Prometheus: nothing to stop (test servers stop with their tests)")


def status(services: Sequence[str]) -> bool:
    checks = {"kafka": kafka_status, "rabbitmq": rabbitmq_status, "prometheus": prometheus_status}
    results = [checks[name]() for name in services]
    return all(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dev.brokers", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    services = tuple(dict.fromkeys(args.services)) or SERVICES
    try:
        if args.command == "up":
            up(services)
        elif args.command == "down":
            down(services)
        else:
            return 0 if status(services) else 1
    except BrokerError as exc:
        print(f"[brokers] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
