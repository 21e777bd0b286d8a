"""Prometheus for tests: install the Debian package; start one server per test on a free port."""

from __future__ import annotations

import dataclasses
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from dev.brokerkit.processes import apt_install, free_port, is_alive, run, spawn_detached, stop_pid, tail
from dev.brokerkit.settings import BrokerError, log


def promtool_path() -> str | None:
    return shutil.which("promtool")


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def ensure_prometheus_installed() -> None:
    if not (promtool_path() and prometheus_binary()):
        apt_install(["prometheus"])


def prometheus_version() -> str:
    binary = prometheus_binary()
    if not binary:
        return "not installed"
    first = run([binary, "--version"], check=False, timeout=30).splitlines()
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
        if is_alive(self.pid):
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
        if not is_alive(pid) or time.monotonic() > deadline:
            server.stop()
            raise BrokerError(f"Prometheus did not become ready on {server.url}:\n{tail(log_file)}")
        time.sleep(0.2)


def prometheus_status() -> bool:
    tool = promtool_path()
    log(f"Prometheus: {prometheus_version()}; promtool {tool or 'NOT installed'} (servers start per test)")
    return tool is not None
