"""The dev Kafka broker: jars from Maven, KRaft storage, start, wait, stop, status."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import string
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from dev.brokerkit.kafka_protocol import KafkaMetadata, kafka_ready
from dev.brokerkit.processes import broker_lock, is_alive, owned_pid, port_open, run, spawn_detached, stop_pid, tail
from dev.brokerkit.settings import (
    DEV_DIR,
    KAFKA_HEAP,
    KAFKA_START_TIMEOUT,
    KAFKA_VERSION,
    BrokerError,
    cache_dir,
    kafka_bootstrap,
    kafka_controller_port,
    kafka_is_external,
    kafka_port,
    log,
    run_dir,
)


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
        return cls.under(run_dir() / "kafka")

    @classmethod
    def under(cls, home: Path) -> KafkaPaths:
        """The layout of a broker living in ``home`` (the dev broker's, or a test's own node)."""
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
    run(
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


def new_cluster_id() -> str:
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def render_kafka_config(paths: KafkaPaths, port: int, controller_port: int, overlay: str = "") -> None:
    """Write server.properties from the template; ``overlay`` lines come last, so they win."""
    template = string.Template((DEV_DIR / "kafka" / "server.properties.template").read_text())
    text = template.substitute(port=port, controller_port=controller_port, data_dir=str(paths.data))
    paths.config.write_text(text + overlay)


def kafka_java_argv(paths: KafkaPaths, main_class: str, *args: str, heap: str = KAFKA_HEAP,
                    jvm_options: Sequence[str] = ()) -> list[str]:
    return [
        _java(),
        f"-Xms{heap}" if _size_mb(heap) <= 256 else "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        *jvm_options,
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


def format_kafka_storage(paths: KafkaPaths, *extra: str) -> None:
    """Format KRaft storage once; ``extra`` are more StorageTool arguments (e.g. ``--add-scram``)."""
    if (paths.data / "meta.properties").exists():
        return
    paths.data.mkdir(parents=True, exist_ok=True)
    if not paths.cluster_id.exists():
        paths.cluster_id.write_text(new_cluster_id() + "\n")
    cluster = paths.cluster_id.read_text().strip()
    log(f"formatting KRaft storage {paths.data} (cluster id {cluster})")
    argv = kafka_java_argv(
        paths, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(paths.config), *extra, heap="256m"
    )
    run(argv, timeout=300)


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
    render_kafka_config(paths, kafka_port(), kafka_controller_port())
    format_kafka_storage(paths)
    argv = kafka_java_argv(paths, "kafka.Kafka", str(paths.config))
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
        if pid is not None and not is_alive(pid):
            raise BrokerError(
                f"Kafka (pid {pid}) exited during start-up; {paths.logs}/kafka.out ends with:\n"
                + tail(paths.logs / "kafka.out")
                + f"\n{paths.logs}/server.log ends with:\n"
                + tail(paths.logs / "server.log")
            )
        if time.monotonic() > deadline:
            raise BrokerError(
                f"Kafka did not answer a metadata request on {kafka_bootstrap()} within {timeout:.0f}s; "
                f"see {paths.logs}/server.log:\n" + tail(paths.logs / "server.log")
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
    with broker_lock():
        kafka_down()


def kafka_start(timeout: float = KAFKA_START_TIMEOUT) -> KafkaMetadata:
    """Start the local broker again (or keep the running one) and wait until it answers."""
    with broker_lock():
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
