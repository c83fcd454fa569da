"""Builds the Faust worker from settings and `loopline.yaml`: the composition of the loop.

Topics are created here, explicitly, before Faust starts; the MLflow store is touched once so
its schema exists before any job races to create it; launchers and the registry are chosen
here and handed to the agents through their ports.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from agents.app import AppOptions, build_app
from loopline import config as config_mod
from loopline.launchers import build_launchers, distributed_runs
from adapters.registry import MlflowRegistry
from loopline.settings import Settings
from loopline.startup import (EXIT_BROKER_UNREACHABLE, BrokerUnreachable, StartupHealth,
                              wait_for_broker)
from streams.admin import ensure_topics
from streams.security import KafkaRefused, SecurityConfigError
from triggers.local import LocalLauncher

log = logging.getLogger("loopline.worker")


def job_env(settings: Settings) -> dict[str, str]:
    """What every launched run needs to find the tracking store and the state dir."""
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri,
           "LOOPLINE_STATE_DIR": str(settings.state_dir.resolve()),
           "LOOPLINE_BROKER": settings.broker, "LOOPLINE_TOPIC_PREFIX": settings.topic_prefix}
    if not settings.tracking_uri.startswith(("http://", "https://")):
        env["LOOPLINE_ARTIFACT_ROOT"] = settings.artifact_root   # a server picks its own store
    return env


def init_tracking_store(settings: Settings) -> None:
    """Create the MLflow schema once, here, instead of in N jobs racing at their first call."""
    import mlflow

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.MlflowClient(tracking_uri=settings.tracking_uri).search_experiments(max_results=1)


def build(settings: Settings):
    models = config_mod.load(settings.config)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings.broker, settings.topics, **settings.kafka_security.kafka_python())
    init_tracking_store(settings)
    opts = AppOptions(
        broker=settings.broker, group=settings.group, topics=settings.topics,
        source=settings.source, web_port=settings.web_port, web_bind=settings.web_bind,
        broker_lost_seconds=settings.broker_lost_seconds,
        datadir=str(settings.table_dir), table_store=settings.table_store,
        rebalance_timeout=settings.rebalance_timeout, session_timeout=settings.session_timeout,
        heartbeat_interval=settings.heartbeat_interval,
        fetch_max_wait_ms=settings.fetch_max_wait_ms, tick_interval=settings.tick_interval,
        poll_interval=settings.poll_interval, max_event_bytes=settings.max_event_bytes,
        job_env=job_env(settings),
        operator_keys=str(settings.operator_keys) if settings.operator_keys else None,
        lag_interval=settings.lag_interval, security=settings.kafka_security,
        deadletter_spill_uri=settings.deadletter_spill_uri
        or (settings.state_dir.resolve() / "deadletter").as_uri())
    configured = config_mod.configured(models)           # each family once, not per member
    launchers = {"local": LocalLauncher(settings.state_dir.resolve(),
                                        distributed=distributed_runs(configured, "local")),
                 **build_launchers(settings, configured)}     # kubernetes / argo, if models use them
    return build_app(opts, models, launchers, MlflowRegistry(settings.tracking_uri),
                     drift_checker=drift_checker(settings, configured))


def drift_checker(settings: Settings, models):
    """The process pool for drift checks, if any model monitors drift (spawned at start-up, so
    the first batch does not pay for importing Evidently)."""
    if not any(getattr(m, "drift", None) is not None for m in models.values()):
        return None
    from adapters.drift import PooledDriftChecker

    return PooledDriftChecker(settings.tracking_uri, workers=settings.drift_workers,
                              report_dir=str(settings.state_dir.resolve() / "drift"))


def run(settings: Settings | None = None, loglevel: str = "info") -> None:
    import faust

    settings = settings or Settings()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow resolves some registry sources through the process-wide URI, not the client's.
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    try:
        with StartupHealth(settings.web_bind, settings.web_port) as health:
            wait_for_broker(settings.broker, settings.broker_wait_seconds, health,
                            security=settings.kafka_security)
    except (BrokerUnreachable, KafkaRefused, SecurityConfigError) as exc:
        log.error("giving up: %s", exc)
        sys.exit(EXIT_BROKER_UNREACHABLE)
    app = build(settings)
    # Everything imported so far (MLflow, Faust, pandas: ~10^6 objects) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it (fewer,
    # shorter pauses on the event loop; the batch paths allocate hundreds of thousands).
    gc.collect()
    gc.freeze()
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
