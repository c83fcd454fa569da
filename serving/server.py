"""`loopline serve`: one serving replica, wired together and run until SIGTERM.

Why aiohttp: it is already installed (faust-streaming depends on it), so the serving image
needs no new dependency; it is a well-kept, widely used asyncio HTTP server whose request
handling costs less per request than an ASGI stack (no framework layer between the socket and
the handler), which matters for one-row predictions. uvloop is used when it is installed.

Start order, and why: the HTTP port opens first (/livez answers, /readyz says what is missing);
the bus follower positions itself on the deployment topic's end *before* the registry is asked
for each champion, so no deployment can fall in between; it then reads the experiment states
back and follows both topics (serving.bus). Models load in threads (serving.store); predictions
are micro-batched per version (serving.batcher); ids are signed (serving.ids).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import Callable

from serving.bus import READ_BACK_SECONDS, Follower
from serving.metrics import ServingMetrics
from serving.predlog import PredictionLog
from serving.store import Batching, ModelStore
from streams.security import KafkaSecurity
from streams.topics import Topics

log = logging.getLogger("loopline.serving")


def mlflow_registry(tracking_uri: str):
    """(loader, resolver) over MLflow: a pyfunc of any flavour by exact version; the version an
    alias names, None when the model or the alias does not exist (yet)."""
    state: dict = {}

    def client():
        if "client" not in state:           # import MLflow in the loading thread, not at start
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
            state["mlflow"], state["client"] = mlflow, mlflow.MlflowClient(tracking_uri, tracking_uri)
        return state["client"]

    def loader(name: str, version: str):
        client()
        return state["mlflow"].pyfunc.load_model(f"models:/{name}/{version}")

    def resolver(name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(client().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None                 # no such model or alias: nothing to serve yet
            raise

    return loader, resolver


def serve(tracking_uri: str, bootstrap: str, topics: Topics, models: dict[str, str] | list[str],
          host: str = "127.0.0.1", port: int = 8080, *, key: bytes, batching: Batching = Batching(),
          security: KafkaSecurity | None = None, read_back_seconds: float = READ_BACK_SECONDS,
          admit: Callable[[str], str | None] | None = None) -> None:
    """Serve `models` ({name: alias}; a list means alias `champion` for each) until SIGTERM/SIGINT,
    and the models `admit` names (a family's members) from their first request (ModelStore)."""
    aliases = models if isinstance(models, dict) else {name: "champion" for name in models}
    try:
        import uvloop
    except ImportError:
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(_serve(tracking_uri, bootstrap, topics, aliases, host, port, key, batching,
                  security or KafkaSecurity(), read_back_seconds, admit))


async def _serve(tracking_uri, bootstrap, topics, aliases, host, port, key, batching, security,
                 read_back_seconds, admit) -> None:
    from aiohttp import web

    from serving.app import make_app

    loop = asyncio.get_running_loop()
    metrics = ServingMetrics()
    loader, resolver = mlflow_registry(tracking_uri)
    store = ModelStore(aliases, loader=loader, resolver=resolver, batching=batching, metrics=metrics,
                       admit=admit)
    plog = await asyncio.to_thread(PredictionLog, bootstrap, topics, **security.kafka_python())
    runner = web.AppRunner(make_app(store, plog, key, metrics), access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving %s on http://%s:%d (batches of up to %d rows / %.1f ms)",
             ", ".join(f"{n}@{a}" for n, a in aliases.items()), host, port, batching.max_rows,
             batching.max_wait_ms)

    handlers = {"following": store.start, "deployment": store.on_deployment,
                "experiment": store.on_experiment, "caught_up": store.on_caught_up}
    stop = threading.Event()
    # the store's own dict: a member taken in later is followed too
    follower = Follower(bootstrap, topics, store.models, stop=stop, read_back_seconds=read_back_seconds,
                        deliver=lambda kind, *args: loop.call_soon_threadsafe(handlers[kind], *args),
                        **security.kafka_python())
    follower.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
        log.info("serving: stopping")
    finally:
        stop.set()
        await runner.cleanup()              # in-flight requests finish first
        await asyncio.to_thread(plog.close)
        follower.join(3)


def key_path(explicit: Path | None, state_dir: Path) -> tuple[Path, bool]:
    """The signing key's file and whether it may be created (only the default one)."""
    return (Path(explicit), False) if explicit else (Path(state_dir) / "serving.key", True)
