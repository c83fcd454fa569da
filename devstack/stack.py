"""The local stack supervisor: broker, worker, serving endpoint and an observer, as real processes.

The demo, the integration tests and the benchmarks all need the same thing: the loop running
on this machine exactly as it would in production (separate worker and serving processes
talking over Kafka, MLflow as a store on disk), plus a view of the topics. This starts it,
knows when it is ready, and stops every part on exit, whatever happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

from devstack.observe import Observer
from loopline.settings import Settings
from streams import events as ev
from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, free_port
from streams.security import KafkaSecurity

REPO = Path(__file__).resolve().parent.parent


class Process:
    """A child process with its output in a log file; `check()` raises with the log's tail if it died."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        self.name, self.log, self.argv, self.env = name, log, argv, env
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv, env=self.env, stdout=open(self.log, "ab"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to everyone else."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ready(web_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class LocalStack:
    """`with LocalStack(state_dir, config) as stack:` — everything up, `stack.observer` watching."""

    def __init__(self, state_dir: Path, config: Path, *, bootstrap: str | None = None,
                 prefix: str = "loopline", partitions: int = 4, serving: bool | int = False,
                 mlflow_uri: str = "", extra_env: dict | None = None,
                 observe: tuple[str, ...] | None = None, security: KafkaSecurity | None = None):
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config, self.bootstrap, self.prefix = Path(config).resolve(), bootstrap, prefix
        # serving: True or a count of replicas (`loopline serve` processes, each on its own port)
        self.partitions, self.mlflow_uri = partitions, mlflow_uri
        self.with_serving = int(serving)
        self.extra_env = extra_env or {}
        self.observe = observe          # topic roles the observer reads (None: all; "clock" always)
        self.security = security or KafkaSecurity()     # how every process here talks to Kafka
        self._stack = ExitStack()
        self.serve_ports = [free_port() for _ in range(max(self.with_serving, 1))]
        self.serve_port = self.serve_ports[0]           # the first replica (one-replica stacks)
        self.worker: Process | None = None
        self.servings: list[Process] = []
        self.serving: Process | None = None

    def __enter__(self) -> "LocalStack":
        try:
            if self.worker is None:         # `stack.start()` may have run already
                self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def start(self) -> None:
        self.broker: EmbeddedBroker | None = None          # ours, when no bootstrap was given
        if self.bootstrap is None:
            self.broker = self._stack.enter_context(EmbeddedBroker(log_path=self.state_dir / "broker.log"))
            self.bootstrap = self.broker.bootstrap
        self.settings = Settings(broker=self.bootstrap, state_dir=self.state_dir, config=self.config,
                                 topic_prefix=self.prefix, partitions=self.partitions,
                                 mlflow_uri=self.mlflow_uri, group=f"{self.prefix}-worker",
                                 web_port=free_port())
        ensure_topics(self.bootstrap, self.settings.topics, **self.security.kafka_python())
        roles = None if self.observe is None else {"clock", *self.observe}
        self.observer = self._stack.enter_context(Observer(self.bootstrap, self.settings.topics,
                                                           roles=roles, **self.security.kafka_python()))
        self.worker = self.start_worker()
        self.wait_ready()
        for index in range(self.with_serving):
            name = "serving" if index == 0 else f"serving-{index + 1}"
            self.servings.append(self._process(name, ["serve", "--port", str(self.serve_ports[index])]))
        self.serving = self.servings[0] if self.servings else None

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "LOOPLINE_BROKER": s.broker, "LOOPLINE_STATE_DIR": str(s.state_dir),
                "LOOPLINE_CONFIG": str(s.config), "LOOPLINE_TOPIC_PREFIX": s.topic_prefix,
                "LOOPLINE_PARTITIONS": str(s.partitions), "LOOPLINE_GROUP": s.group,
                "LOOPLINE_MLFLOW_URI": s.mlflow_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
                # This stack's store, whatever the calling process exported (mlflow.set_tracking_uri
                # writes MLFLOW_TRACKING_URI into os.environ, and every step would inherit it).
                "MLFLOW_TRACKING_URI": s.tracking_uri, "MLFLOW_REGISTRY_URI": s.tracking_uri,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                # Tansu holds a new member's JoinGroup for half the session timeout (measured: 5.0 s
                # at 10 s, 2.0 s at 3 s), and a killed worker's partitions wait the whole of it: on
                # one machine, 6 s (heartbeats every 1 s) makes each start and each restart seconds
                # shorter. A deployment keeps the worker's default (10 s).
                "LOOPLINE_SESSION_TIMEOUT": os.environ.get("LOOPLINE_SESSION_TIMEOUT", "6"),
                **self.security.env(), **self.extra_env, **extra}

    def _process(self, name: str, args: list[str], **env: str) -> Process:
        process = Process(name, [sys.executable, "-m", "loopline.cli", *args], self.env(**env),
                          self.state_dir / f"{name}.log")
        self._stack.callback(process.stop)
        return process

    def start_worker(self, name: str = "worker", **env: str) -> Process:
        port = free_port()
        process = self._process(name, ["worker"], LOOPLINE_WEB_PORT=str(port), **env)
        process.web_port = port          # the worker's web server: /metrics, /livez, /readyz
        return process

    def restart_worker(self, **env: str) -> Process:
        """A new worker process in place of the current one (dead or alive), ready on return."""
        self.worker.stop()
        self.worker = self.start_worker(**env)
        self.wait_ready()
        return self.worker

    def wait_ready(self, timeout: float = 90.0, worker: Process | None = None) -> None:
        """The worker answers /readyz once it has joined its group and owns its partitions; the
        leader's clock ticks say the loop runs. Both, or a clear error with the worker's log."""
        worker = worker or self.worker
        seen = len(self.observer.of_type(ev.ClockTicked.TYPE))
        deadline = time.monotonic() + timeout
        while not (ready(worker.web_port) and len(self.observer.of_type(ev.ClockTicked.TYPE)) > seen):
            worker.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{worker.name} not ready after {timeout}s:\n{worker.tail()}")
            time.sleep(0.05)

    @staticmethod
    def unique_prefix(base: str = "t") -> str:
        return f"{base}{uuid.uuid4().hex[:10]}"
