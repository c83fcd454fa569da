"""Wiring of the monitoring half of the loop: drift monitor, metric windows, metric guard.

    drift agent     data.arrived + prediction.logged → DriftChecker port → drift.detected
    windows agent   feedback.received (+ clock ticks to close windows) → metric.reported
    metric guard    metric.reported + deployment.status, inside the trigger → retrain signal
                    (reason "metric") or rollback.requested (to the deployer)

`install` is called by `agents.app.build_app`; it also serves GET /loopline/monitoring on the
worker's web port: per model the suppressed retrain signals (count and newest event keys), what
is queued or in flight, the guard's view (champion, deployed at, online score per version) and
the drift checks' counts, so "why did nothing retrain?" has an answer without reading logs.
"""

from __future__ import annotations

from agents.context import Context
from agents.drift import DriftMonitor
from agents.guard import MetricGuard, guard_table
from agents.windows import MetricWindows, retention, window_sizes

PAGE = "/loopline/monitoring"


def install(app, ctx: Context, trigger, checker=None) -> dict:
    opts, topics, models = ctx.opts, ctx.opts.topics, ctx.models
    guard = MetricGuard(ctx, app.Table(guard_table(opts.group), default=None,
                                       partitions=topics.partitions, key_type=str))
    trigger.guard = guard
    tables = {}
    for size in sorted(window_sizes(models)):
        grace = max(m.metrics.grace_seconds for m in models.values()
                    if getattr(m, "metrics", None) is not None and m.metrics.window_seconds == size)
        tables[size] = app.Table(
            f"{opts.group}-metric-windows-{size}s", default=None, partitions=topics.partitions,
            # no value_type: Faust would call dict.from_data() when it restores the changelog
        ).tumbling(size, expires=retention(size, grace) + size + 60.0)
    monitor, windows = DriftMonitor(ctx, checker), MetricWindows(ctx, tables)
    consume = ctx.edge.consume

    def raw(*names: str):
        return app.topic(*names, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw")

    @app.agent(raw(topics.data, topics.predictions), name="drift")
    async def drift_agent(stream):
        await consume(stream, monitor.handle, owns={topics.predictions})

    @app.agent(raw(topics.feedback, topics.clock), name="metric-windows")
    async def windows_agent(stream):
        await consume(stream, windows.handle, owns={topics.feedback})

    @app.page(PAGE)
    async def monitoring_page(web, request):
        return web.json(status(trigger, guard, monitor, windows))

    return {"guard": guard, "drift": monitor, "windows": windows}


def status(trigger, guard: MetricGuard, monitor: DriftMonitor, windows: MetricWindows) -> dict:
    out = {}
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
        }
    return out
