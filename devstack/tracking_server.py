"""Start an MLflow tracking server (PostgreSQL backend) as a child process and wait for it.

Production runs MLflow as a server on PostgreSQL; the tests exercise that same path on a
server of their own (`devstack.postgres`). A fresh database per server keeps runs isolated.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from streams.broker import free_port


def create_database(dsn_base: str) -> str:
    """A fresh, empty database on the server at `dsn_base` (postgresql://USER@HOST:PORT);
    returns its SQLAlchemy URI."""
    import psycopg2

    name = f"loopline_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(f"{dsn_base}/postgres")
    conn.autocommit = True                     # CREATE DATABASE refuses a transaction block
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; name the driver we install.
    return f"{dsn_base.replace('postgresql://', 'postgresql+psycopg2://')}/{name}"


def drop_database(uri: str) -> None:
    import psycopg2

    base, name = uri.replace("+psycopg2", "").rsplit("/", 1)
    conn = psycopg2.connect(f"{base}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


class TrackingServer:
    def __init__(self, backend_uri: str, artifacts: Path, log: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_uri, self.artifacts, self.log = backend_uri, artifacts, log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "TrackingServer":
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
             "--artifacts-destination", self.artifacts.resolve().as_uri(),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait(90)
        except BaseException:
            self.__exit__()      # a server that never got healthy (and its job runners) goes too
            raise
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server not healthy after {timeout}s")

    def __exit__(self, *exc) -> None:   # the whole session: MLflow 3 forks job-runner processes
        if self.proc and self.proc.poll() is None:
            import os
            import signal
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
