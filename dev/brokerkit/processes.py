"""Processes of the dev brokers: start detached, find ours by pid file, stop, run a command, apt-get."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dev.brokerkit.settings import STOP_TIMEOUT, BrokerError, log, run_dir


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def owned_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid recorded in ``pid_file`` if that process still runs and is the one we started.

    The command line must contain every marker, so that a recycled pid is never taken for ours.
    """
    pid = read_pid(pid_file)
    return None if pid is None else pid_if_alive(pid, *markers)


def pid_if_alive(pid: int, *markers: str) -> int | None:
    """``pid`` if that process runs and its command line contains every marker, else None."""
    if not is_alive(pid):
        return None
    command = cmdline(pid)
    if all(marker in command for marker in markers):
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
        if not is_alive(pid):
            return
        if not killed and time.monotonic() > deadline:
            log(f"{what} (pid {pid}) did not stop within {timeout:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.1)


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (a session that :func:`spawn_detached` started)."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(proc.name))
    return members


def stop_group(pgid: int, what: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a whole process group we started (a wrapper script and its child), SIGKILL it after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is our child
        if not group_members(pgid):
            return
        if not killed and time.monotonic() > deadline:
            log(f"{what} (process group {pgid}) did not stop within {timeout:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
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


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 600, **kwargs: object) -> str:
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
def broker_lock(name: str = "brokers.lock") -> Iterator[None]:
    """Serialise concurrent ``up``/``down`` calls (several people share one checkout); one lock file per ``name``."""
    path = run_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)



def apt_install(packages: Sequence[str]) -> None:
    missing = ", ".join(packages)
    if os.geteuid() != 0:
        raise BrokerError(f"{missing} not installed; install with: sudo apt-get install -y {' '.join(packages)}")
    if not shutil.which("apt-get"):
        raise BrokerError(f"{missing} not installed and there is no apt-get; install it by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = run(["apt-cache", "policy", *packages], check=False, env=env)
    if "Candidate: (none)" in policy or policy.count("Candidate:") < len(packages):
        log("apt-get update")
        run(["apt-get", "update", "-q"], env=env)
    log(f"apt-get install -y {' '.join(packages)}")
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env, timeout=900)
