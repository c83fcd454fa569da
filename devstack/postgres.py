"""A PostgreSQL server of our own, in a temporary directory, for the MLflow-server tests.

Nothing on the machine is running or ours to fill: `initdb` makes a throw-away cluster (trust
auth) from the installed server binaries, it listens on a free port on 127.0.0.1 with its socket
in the same directory, and `pg_ctl stop` plus the directory's removal leave nothing behind.
initdb refuses to run as root, so as root every command runs as the `postgres` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from streams.broker import free_port

SYSTEM_USER = "postgres"        # Debian's postgresql package creates it


class PostgresUnavailable(RuntimeError):
    pass


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: Debian's newest /usr/lib/postgresql/<version>/bin, else PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL's initdb is not installed (apt-get install postgresql; `make test` does it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} user for initdb to run as"
    return None


class Postgres:
    """`with Postgres() as pg:` a running server; `pg.dsn` is postgresql://postgres@127.0.0.1:PORT."""

    def __init__(self, start_timeout: int = 60):
        self.start_timeout = start_timeout
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.root: Path | None = None

    def __enter__(self) -> "Postgres":
        reason = unavailable_reason()
        if reason:
            raise PostgresUnavailable(reason)
        # not pytest's tmp_path: its parents are root's alone, and the server runs as postgres
        self.root = Path(tempfile.mkdtemp(prefix="loopline-pg-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
            self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--locale", "C", "--no-sync")
            # -w: pg_ctl returns once the server accepts connections, or fails after -t seconds
            self._run("pg_ctl", "start", "-w", "-t", str(self.start_timeout), "-D", self.data,
                      "-l", self.log, "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                      " -c fsync=off")
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def data(self) -> str:
        return str(self.root / "data")

    @property
    def log(self) -> str:
        return str(self.root / "server.log")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(bin_dir() / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=self.start_timeout + 30)
        if proc.returncode != 0:
            log = Path(self.log).read_text()[-2000:] if Path(self.log).exists() else ""
            raise PostgresUnavailable(f"{tool} {' '.join(args)} failed ({proc.returncode}): "
                                      f"{(proc.stderr or proc.stdout)[-2000:]}{log}")

    def __exit__(self, *exc) -> None:
        if self.root is None:
            return
        try:
            if (self.root / "data" / "postmaster.pid").exists():      # a server runs (or half started)
                self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", self.data)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
