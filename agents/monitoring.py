"""Wiring of the monitoring half of the loop: drift monitor, metric windows, metric guard.

    drift agent     data.arrived + prediction.logged → DriftChecker port → drift.detected
    metric windows  feedback.received, in batches (agents.batch: a librdkafka consumer in
                    the worker, not a Faust agent: ~4x an agent's rate) → metric.reported
    experiments     feedback, rollout, deployment and shadow records, in batches (its own
                    consumer group) → rollout.status (analyses) + experiment.state
    metric guard    metric.reported + deployment.status, inside the trigger → retrain signal
                    (reason "metric") or rollback.requested (to the deployer)

`install` is called by `agents.app.build_app`; it also serves GET /loopline/monitoring on the
worker's web port: per model the suppressed retrain signals (count and newest event keys), what
is queued or in flight, the guard's view (champion, deployed at, online score per version) and
the drift checks' counts, so "why did nothing retrain?" has an answer without reading logs.
"""

from __future__ import annotations

from agents.batch import BatchConsumer
from agents.context import Context
from agents.drift import DriftMonitor
from agents.experiments import ExperimentFolder
from agents.guard import MetricGuard, guard_table
from agents.windows import MetricWindows

PAGE = "/loopline/monitoring"


def install(app, ctx: Context, trigger, checker=None) -> dict:
    opts, topics = ctx.opts, ctx.opts.topics
    guard = MetricGuard(ctx, app.Table(guard_table(opts.group), default=None,
                                       partitions=topics.partitions, key_type=str))
    trigger.guard = guard
    monitor, windows = DriftMonitor(ctx, checker), MetricWindows(ctx)
    consume = ctx.edge.consume
    feedback = BatchConsumer(
        bootstrap=opts.broker, group=f"{opts.group}-metric-windows", topics=[topics.feedback],
        # Windows are seconds long: no need to poll an idle feedback topic every 10 ms (each
        # idle fetch costs the worker and the broker CPU); a busy topic is fetched back to back.
        handler=windows, fetch_max_wait_ms=max(opts.fetch_max_wait_ms, 100),
        rebalance_timeout=opts.rebalance_timeout, session_timeout=opts.session_timeout,
        heartbeat_interval=opts.heartbeat_interval, client_id=f"{opts.group}-metric-windows",
        config=opts.security.confluent())

    # The experiment folder: always installed (idle it costs one empty fetch per 200 ms), so a
    # rollout an operator starts on a `direct` model still runs. Its own group: it reads the
    # feedback again, and commits by what its published state holds (agents.experiments).
    # It rests the feedback partitions where no experiment runs (ExperimentFolder.wants), and
    # fetches less ahead than the windows (4 MB, 2,000 records a batch): only live experiments'
    # feedback counts here, and its memory is the worker's.
    experiments = ExperimentFolder(ctx)
    experiment_feed = BatchConsumer(
        bootstrap=opts.broker, group=f"{opts.group}-experiments",
        topics=[topics.feedback, topics.rollout, topics.deployment, topics.shadow],
        handler=experiments, fetch_max_wait_ms=max(opts.fetch_max_wait_ms, 100), max_records=2_000,
        rebalance_timeout=opts.rebalance_timeout, session_timeout=opts.session_timeout,
        heartbeat_interval=opts.heartbeat_interval, client_id=f"{opts.group}-experiments",
        config={"queued.max.messages.kbytes": 4 << 10, **opts.security.confluent()})

    def raw(*names: str):
        return app.topic(*names, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw")

    @app.agent(raw(topics.data, topics.predictions), name="drift")
    async def drift_agent(stream):
        await consume(stream, monitor.handle, owns={topics.predictions})

    @app.task
    async def metric_windows():         # always: it owns the topic (dead-letters what is bad)
        await feedback.run()

    @app.task
    async def experiment_folder():       # idle calls (empty batches) drive its timed analyses
        await experiment_feed.run()

    @app.page(PAGE)
    async def monitoring_page(web, request):
        return web.json(status(trigger, guard, monitor, windows, experiments))

    return {"guard": guard, "drift": monitor, "windows": windows, "experiments": experiments}


def status(trigger, guard: MetricGuard, monitor: DriftMonitor, windows: MetricWindows,
           experiments: ExperimentFolder | None = None) -> dict:
    out = {}
    folded = experiments.snapshot() if experiments is not None else {}
    for name in trigger.ctx.models:
        state = trigger.state(name)
        guard_state = guard.state(name).to_dict()
        guard_state.pop("seen", None)
        out[name] = {
            "retrain": {"suppressed": state.suppressed, "suppressed_keys": list(state.suppressed_keys),
                        "pending": list(state.pending), "in_flight": state.in_flight,
                        "paused": state.paused, "new_rows": state.new_rows},
            "metric_guard": guard_state,
            "drift": dict(monitor.stats[name]),
            "prediction_buffers": {v: len(b.rows) for (m, v), b in monitor.buffers.items() if m == name},
            "late_feedback": windows.late,
            "experiment": folded.get(name),          # on this worker's partitions only
        }
    return out
