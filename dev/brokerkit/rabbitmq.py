"""The dev RabbitMQ node: install, plugins, epmd, start, wait, stop, status."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dev.brokerkit.processes import (
    apt_install,
    cmdline,
    is_alive,
    owned_pid,
    port_open,
    run,
    spawn_detached,
    stop_pid,
    tail,
)
from dev.brokerkit.settings import (
    RABBITMQ_PLUGINS,
    RABBITMQ_START_TIMEOUT,
    BrokerError,
    log,
    rabbitmq_is_external,
    rabbitmq_management_url,
    rabbitmq_port,
    rabbitmq_url,
    run_dir,
)


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
    return run(["rabbitmqctl", *args], timeout=timeout, check=check)


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
    apt_install(["rabbitmq-server"])
    # The package's maintainer scripts run Erlang, which leaves an epmd daemon behind: that one is
    # ours too, so that `down` leaves nothing of ours running.
    if not epmd_before and port_open("127.0.0.1", 4369):
        pid = pid_listening_on(4369)
        if pid is not None and "epmd" in cmdline(pid):
            paths.epmd_pid_file.write_text(f"{pid}\n")


def start_epmd(paths: RabbitPaths) -> None:
    """Run epmd in the foreground under our own pid, so that ``down`` can stop exactly it.

    Every local node (the dev node, the cluster's) registers with this one epmd on port 4369.
    """
    if port_open("127.0.0.1", 4369):
        return
    epmd = shutil.which("epmd") or "/usr/bin/epmd"
    pid = spawn_detached([epmd], paths.home / "epmd.log", cwd=paths.home)
    paths.epmd_pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", 4369):
        if time.monotonic() > deadline or not is_alive(pid):
            raise BrokerError(f"epmd (pid {pid}) did not listen on 4369: {tail(paths.home / 'epmd.log')}")
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
            run(["rabbitmq-plugins", "enable", *RABBITMQ_PLUGINS], timeout=120)
        rabbitmq_wait()
        return
    if rabbitmq_pid(paths) is None:
        ensure_rabbitmq_installed(paths)
        if not _plugins_enabled():
            log(f"rabbitmq-plugins enable --offline {' '.join(RABBITMQ_PLUGINS)}")
            run(["rabbitmq-plugins", "enable", "--offline", *RABBITMQ_PLUGINS], timeout=120)
        start_epmd(paths)
        env = {
            **os.environ,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(rabbitmq_port()),
        }
        log("RabbitMQ: rabbitmq-server -detached")
        run(["rabbitmq-server", "-detached"], env=env, timeout=120)
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
