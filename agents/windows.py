"""The metric-window agent: feedback (true labels of logged predictions) → MetricReported.

Labelled predictions are scored (`policy.metric.score`) and added, per model version, to
tumbling windows kept in a Faust windowed table (`app.Table(...).tumbling(size, expires=...)`,
one per distinct window size in `loopline.yaml`), changelogged like every table. A window is
reported once its end plus the grace for late feedback has passed: on the model's clock tick,
inside the agent that owns the model's partition, so table writes stay partition-local and a
quiet model's last window still closes. The report's event id is a function of (model, version,
window), so a report repeated after a crash is deduplicated downstream; a reported window is
marked, not deleted (feedback arriving later for it is counted as late, not as a new window),
and deleted once it is `retention` old.

The window arithmetic is the pure `fold` of `agents.policy.metric`, called here with a batch of
one; a batched consumer (for 100k events/s) can call it with thousands and write each window
once.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from prometheus_client import Counter

from agents.context import Context
from agents.edge import PermanentError
from agents.policy import metric as m
from streams import events as ev
from streams.codec import Decoded, build

log = logging.getLogger("loopline.windows")
SEPARATOR = "|"


def window_sizes(models: Mapping) -> set[int]:
    return {int(model.metrics.window_seconds) for model in models.values()
            if getattr(model, "metrics", None) is not None}


def retention(size: int, grace: float) -> float:
    """How long a reported window is kept (to recognise late feedback) before it is deleted."""
    return max(60.0, 2.0 * size) + grace


class MetricWindows:
    def __init__(self, ctx: Context, tables: Mapping[int, object]):
        self.ctx = ctx
        self.tables = {size: getattr(t, "table", t) for size, t in tables.items()}  # WindowWrapper → Table
        registry = ctx.metrics.registry
        self.feedback = Counter("loopline_feedback", "Labelled predictions by model and outcome "
                                "(counted, late, unscored)", ["model", "outcome"], registry=registry)
        self.windows = Counter("loopline_metric_windows", "Metric windows reported, by model",
                               ["model"], registry=registry)
        self.late = 0

    async def handle(self, d: Decoded) -> None:
        if isinstance(d.data, ev.FeedbackReceived):
            self.add(d)
        elif isinstance(d.data, ev.ClockTicked):
            await self.close(d.event.subject, time.time())

    def add(self, d: Decoded) -> None:
        model = self.ctx.model(d.event)
        policy: m.MetricPolicy | None = getattr(model, "metrics", None)
        if policy is None:
            return
        data = d.data
        try:
            value = m.score(policy.metric, data.prediction, data.label)
        except (TypeError, ValueError) as exc:
            self.feedback.labels(model.name, "unscored").inc()
            raise PermanentError(f"cannot score feedback for {policy.metric}: {exc}") from None
        table = self.tables[int(policy.window_seconds)]
        folded = m.fold([(data.model_version, d.event.timestamp, value)], policy.window_seconds)
        for (version, start), counts in folded.items():
            key = (f"{model.name}{SEPARATOR}{version}", table.window.current(start))
            old = table.get(key)
            if old and old.get("reported"):
                self.late += counts.count
                self.feedback.labels(model.name, "late").inc(counts.count)
                continue
            total = m.Counts(old["count"], old["total"]).add(counts) if old else counts
            table[key] = {"count": total.count, "total": total.total, "reported": False}
            self.feedback.labels(model.name, "counted").inc(counts.count)

    async def close(self, model_name: str, now: float) -> None:
        model = self.ctx.models.get(model_name)
        policy: m.MetricPolicy | None = getattr(model, "metrics", None)
        if policy is None:
            return
        size = int(policy.window_seconds)
        table = self.tables[size]
        prefix = f"{model_name}{SEPARATOR}"
        for key in sorted((k for k in list(table.keys()) if k[0].startswith(prefix)),
                          key=lambda k: k[1][0]):
            value = table.get(key)
            if not value:
                continue
            start = float(key[1][0])
            if value.get("reported"):
                if now - (start + size) > retention(size, policy.grace_seconds):
                    del table[key]
                continue
            if not m.closable(start, size, policy.grace_seconds, now) or value["count"] <= 0:
                continue
            version = key[0][len(prefix):]
            event = build(ev.MetricReported(
                metric=policy.metric, value=value["total"] / value["count"], count=value["count"],
                model_version=version, window_start=start, window_end=start + size),
                model_name, source=self.ctx.opts.source,
                id=f"window-{model_name}-{version}-{size}s-{int(start)}")
            await self.ctx.edge.publish(event)
            table[key] = {**value, "reported": True}
            self.windows.labels(model_name).inc()
            log.info("%s: v%s %s %.4g over %d predictions in [%d, %d)", model_name, version,
                     policy.metric, event.data["value"], value["count"], start, start + size)
