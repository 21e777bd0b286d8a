"""The dev PostgreSQL server: Debian's PostgreSQL, one cluster under the run directory.

`up` makes (once) a cluster in ``$TOPO_RUN_DIR/postgres/data`` whose superuser is ``topo`` with
trust authentication on loopback, starts it on 127.0.0.1:5432 (``TOPO_POSTGRES_PORT``), and
creates the database ``topo``. PostgreSQL refuses to run as root: as root the cluster belongs to
the ``postgres`` system user and its commands run through ``runuser``. ``DATABASE_URL`` points
everything at an external server: ``up`` then only checks that it answers.

`PostgresServer` is also what tests use to start a server of their own on another port (a test
that stops its server must never stop the shared one).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import urllib.parse
from pathlib import Path

from dev.brokerkit.processes import apt_install, pid_if_alive, port_open, run, tail
from dev.brokerkit.settings import BrokerError, log, run_dir

POSTGRES_START_TIMEOUT = 60.0
DATABASE = "topo"
USER = "topo"
SYSTEM_USER = "postgres"  # Debian's package creates it; the cluster runs as it when we are root


def postgres_port() -> int:
    value = os.environ.get("TOPO_POSTGRES_PORT")
    return int(value) if value else 5432


def postgres_is_external() -> bool:
    return bool(os.environ.get("DATABASE_URL"))


def database_url() -> str:
    """The URL tests and `topo run` use (``DATABASE_URL`` overrides the dev server's)."""
    return os.environ.get("DATABASE_URL") or f"postgresql://{USER}:{USER}@127.0.0.1:{postgres_port()}/{DATABASE}"


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (`/usr/lib/postgresql/<major>/bin`), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def ensure_postgres_installed() -> Path:
    binaries = postgres_bin()
    if binaries is None:
        apt_install(["postgresql"])
        binaries = postgres_bin()
    if binaries is None:
        raise BrokerError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
                          "install it with: apt-get install -y postgresql")
    return binaries


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """One cluster: data in ``home/data``, its socket and log in ``home``, listening on 127.0.0.1:port."""

    home: Path
    port: int

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self, argv: list[str], timeout: float = 120) -> str:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        return run(argv, timeout=timeout, cwd="/")

    def pid(self) -> int | None:
        """The postmaster's pid while it runs (the first line of its `postmaster.pid`)."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        if not first.isdigit():
            return None
        return pid_if_alive(int(first), "postgres", str(self.data))

    def start(self) -> None:
        """Create the cluster on first use, start it (a running one is kept) and make the `topo` database."""
        binaries = ensure_postgres_installed()
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.home, SYSTEM_USER)
        if not (self.data / "PG_VERSION").exists():
            log(f"PostgreSQL: initdb {self.data}")
            self._as_owner([str(binaries / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                            "--encoding=UTF8", "--no-instructions"])
        if self.pid() is None:
            options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
            log(f"PostgreSQL: pg_ctl start on 127.0.0.1:{self.port}")
            try:
                self._as_owner([str(binaries / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                str(self.log_file), "-w", "-t", str(int(POSTGRES_START_TIMEOUT)), "start"],
                               timeout=POSTGRES_START_TIMEOUT + 30)
            except BrokerError as error:
                raise BrokerError(f"{error}\n--- {self.log_file} ---\n{tail(self.log_file)}") from None
        self.wait()
        exists = self._psql("SELECT 1 FROM pg_database WHERE datname = 'topo'", database="postgres")
        if exists.strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def _psql(self, statement: str, database: str = DATABASE) -> str:
        binaries = ensure_postgres_installed()
        return run([str(binaries / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
                    "-XAtq", "-c", statement], timeout=60)

    def wait(self, timeout: float = POSTGRES_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise BrokerError(f"PostgreSQL did not answer on 127.0.0.1:{self.port} within {timeout:.0f}s\n"
                                  f"--- {self.log_file} ---\n{tail(self.log_file)}")
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (`fast`: roll back open transactions and disconnect clients; `immediate`: like a crash)."""
        binaries = postgres_bin()
        if binaries is None or self.pid() is None:
            return
        log(f"PostgreSQL: pg_ctl stop -m {mode} (127.0.0.1:{self.port})")
        self._as_owner([str(binaries / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])


def dev_server() -> PostgresServer:
    return PostgresServer(run_dir() / "postgres", postgres_port())


def _external_address() -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(database_url())
    return parsed.hostname or "127.0.0.1", parsed.port or 5432


def postgres_up() -> None:
    if postgres_is_external():
        host, port = _external_address()
        log(f"PostgreSQL: external server (DATABASE_URL, {host}:{port}); not starting one")
        if not port_open(host, port, timeout=5):
            raise BrokerError(f"PostgreSQL at {host}:{port} (DATABASE_URL) does not answer")
        return
    server = dev_server()
    if server.pid() is None and port_open("127.0.0.1", server.port):
        log(f"PostgreSQL: reusing the server already listening on 127.0.0.1:{server.port} (not started by us)")
        return
    server.start()


def postgres_down() -> None:
    if postgres_is_external():
        log("PostgreSQL: external server (DATABASE_URL); nothing to stop")
        return
    server = dev_server()
    if server.pid() is None:
        log("PostgreSQL: not running (not started by us)")
        return
    server.stop()


def postgres_status() -> bool:
    if postgres_is_external():
        host, port = _external_address()
        who = "external"
    else:
        server = dev_server()
        host, port = "127.0.0.1", server.port
        pid = server.pid()
        who = f"ours, pid {pid}" if pid else "not started by us"
    answering = port_open(host, port)
    state = f"up ({who})" if answering else "NOT answering"
    log(f"PostgreSQL {host}:{port}: {state}")
    return answering
