"""Metric windows: feedback (true labels of logged predictions) → MetricReported, in batches.

Feedback is the high-volume stream of the loop (one record per labelled prediction), so it is
not a Faust agent: `agents.batch.BatchConsumer` hands this handler whole batches (up to 20,000
records) and commits what it returns. Per batch, each record is decoded on a fast path (one
msgspec decode into the exact FeedbackReceived envelope: strict types, unknown data fields
refused; anything it refuses goes through the full `streams.codec.decode`, which either
accepts it or gives the dead-letter reason), scored (`policy.metric.score`) and aggregated
per (model, version, tumbling window) with the pure `policy.metric.fold`; a window is written
once per batch, not once per record.

A window is reported once its end plus the grace for late feedback has passed: by event time
(the partition's newest feedback is that much later: a backlog replays correctly) or, on a
partition that is caught up, by the wall clock (so a quiet model's last window still closes).
The report's event id is a function of (model, version, window), so a repeated report is
deduplicated downstream (the metric guard remembers window ids); a reported window is
remembered for `retention` so feedback arriving later for it is counted as late, not as a
new window.

Durability (what a crash loses or replays): open windows live in memory, and the committed
offset of each feedback partition is held back to the first record of its oldest open window,
after the closed windows' reports were acknowledged. A crash therefore replays at most the
open windows' feedback (one window plus grace, per partition) and recounts it: nothing counted
is lost. Windows reported before the crash may be reported again after it, with the same
event id (dropped by the guard); late feedback for such a window, replayed after the crash,
goes into that dropped repeat instead of the late counter. A rebalance is the same as a crash
for the partitions that moved. A dead letter that cannot be written (broker or spill store
down) holds the batch: the edge retries it until it is written. Should that outlast the
consumer's max.poll.interval.ms, librdkafka leaves the group and the batch is replayed: its
dead letters may then be written twice, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal, Mapping

import msgspec
from prometheus_client import Counter

from agents.catalog import unknown
from agents.context import Context
from agents.policy import metric as m
from streams import events as ev
from streams.codec import DecodeError, build, decode

log = logging.getLogger("loopline.windows")
_Text = Annotated[str, msgspec.Meta(min_length=1)]
_Value = float | int | str | bool


class _Feedback(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`FeedbackReceived` data, as strict as its pydantic schema."""
    prediction_id: _Text
    model_version: _Text
    label: _Value
    prediction: _Value | None = None
    predicted_at: float | None = None
    experiment: str | None = None          # the rollout that routed it (agents.experiments)
    schema_version: Literal[1] = 1


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The structured-mode CloudEvent of a FeedbackReceived, with the extensions loopline
    writes; any other shape takes the full decoder's path."""
    specversion: Literal["1.0"]
    id: _Text
    source: _Text
    type: Literal["io.loopline.feedback.received"]
    subject: _Text
    time: str
    data: _Feedback
    datacontenttype: str | None = None
    correlationid: str | None = None
    causationid: str | None = None


_decoder = msgspec.json.Decoder(_Envelope)
_UNSEEN, _UNKNOWN = object(), object()


def window_sizes(models: Mapping) -> set[int]:
    return {int(model.metrics.window_seconds) for model in models.values()
            if getattr(model, "metrics", None) is not None}


def retention(size: int, grace: float) -> float:
    """How long a reported window is kept (to recognise late feedback) before it is forgotten."""
    return max(60.0, 2.0 * size) + grace


class _Partition:
    """Windows of one feedback partition (a model's feedback is all on one partition)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, float], list] = {}      # -> [count, total, first offset]
        self.reported: dict[tuple[str, str, float], float] = {}  # -> window end
        self.watermark = 0.0                                      # newest event time seen
        self.position: int | None = None                          # next offset to read


class MetricWindows:
    """The batch handler of the feedback topic (see `agents.batch.BatchConsumer`)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        registry = ctx.metrics.registry
        self.feedback = Counter("loopline_feedback", "Labelled predictions by model and outcome "
                                "(counted, late, unscored)", ["model", "outcome"], registry=registry)
        self.windows = Counter("loopline_metric_windows", "Metric windows reported, by model",
                               ["model"], registry=registry)
        self.parts: dict[Any, _Partition] = {}
        self.late = 0
        self.counted = 0

    # --- the batch consumer's interface -----------------------------------------------------
    def revoked(self, partitions) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    async def process(self, batch: Mapping[Any, list], now: float,
                      caught_up: Mapping[Any, bool]) -> dict[Any, int]:
        bad: list[tuple[Any, str, str]] = []
        for tp, records in batch.items():
            if not records:
                continue
            part = self.parts.setdefault(tp, _Partition())
            self._add(part, records, bad)
            part.position = records[-1].offset + 1
        if bad:      # written (retried until they are) before offsets past them are committed
            await asyncio.gather(*(self.ctx.edge.dead_letter(r, reason, error) for r, reason, error in bad))
        reports = []
        for tp, part in self.parts.items():
            reports += self._closed(part, now, caught_up.get(tp, False))
        if reports:
            await asyncio.gather(*(self.ctx.edge.publish(event) for event, _ in reports))
            for event, (part, key) in reports:
                part.reported[key] = key[2] + (event.data["window_end"] - event.data["window_start"])
                del part.open[key]
                self.windows.labels(key[0]).inc()
                log.info("%s: v%s %s %.4g over %d predictions in [%d, %d)", key[0], key[1],
                         event.data["metric"], event.data["value"], event.data["count"],
                         event.data["window_start"], event.data["window_end"])
        return {tp: min((c[2] for c in part.open.values()), default=part.position)
                for tp, part in self.parts.items() if part.position is not None}

    # --- aggregation ------------------------------------------------------------------------
    def _add(self, part: _Partition, records: list, bad: list) -> None:
        """Decode, score and fold one partition's records. The loop is the hot path of the
        topic (~100k records/s): the fast decode is inlined, everything else is per batch."""
        models = self.ctx.models
        items: dict[str, list] = {}          # model -> [(version, timestamp, score)]
        policies: dict[str, Any] = {}
        unscored: dict[str, int] = {}
        max_bytes = self.ctx.opts.max_event_bytes
        fast, score, parse, watermark = _decoder.decode, m.score, datetime.fromisoformat, part.watermark
        for record in records:
            value, headers = record.value, record.headers
            try:
                if value is None or len(value) > max_bytes or (headers and not (
                        len(headers) == 1 and headers[0][0] == "content-type") and any(
                        name.lower().startswith("ce_") for name, _ in headers)):
                    raise ValueError("not for the fast path")
                e = fast(value)
                t = e.time
                at = parse(t[:-1] + "+00:00" if t[-1:] == "Z" else t).timestamp()
                model, data = e.subject, e.data
                version, prediction, label = data.model_version, data.prediction, data.label
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
                try:                         # the full decoder accepts it, or says why not
                    model, version, at, prediction, label = self._decode(record, max_bytes)
                except DecodeError as exc:
                    bad.append((record, str(exc), "DecodeError"))
                    continue
            policy = policies.get(model, _UNSEEN)
            if policy is _UNSEEN:
                config = models.get(model)
                policy = _UNKNOWN if config is None else getattr(config, "metrics", None)
                policies[model] = policy
            if policy is None:
                continue                     # a model without an online metric
            if policy is _UNKNOWN:
                bad.append((record, unknown(models, model), "PermanentError"))
                continue
            try:
                value = score(policy.metric, prediction, label)
            except (TypeError, ValueError) as exc:
                unscored[model] = unscored.get(model, 0) + 1
                bad.append((record, f"cannot score feedback for {policy.metric}: {exc}", "PermanentError"))
                continue
            if at > watermark:
                watermark = at
            rows = items.get(model)
            if rows is None:
                rows = items[model] = []
            rows.append((version, at, value))
        part.watermark = watermark
        first = records[0].offset            # no window's first record is before the batch's
        for model, rows in items.items():
            policy = policies[model]
            counted = late = 0
            for (version, start), counts in m.fold(rows, int(policy.window_seconds)).items():
                key = (model, version, start)
                if key in part.reported:
                    late += counts.count
                    continue
                cell = part.open.get(key)
                if cell is None:
                    part.open[key] = [counts.count, counts.total, first]
                else:
                    cell[0] += counts.count
                    cell[1] += counts.total
                counted += counts.count
            if counted:
                self.counted += counted
                self.feedback.labels(model, "counted").inc(counted)
            if late:
                self.late += late
                self.feedback.labels(model, "late").inc(late)
        for model, n in unscored.items():
            self.feedback.labels(model, "unscored").inc(n)

    @staticmethod
    def _decode(record, max_bytes: int) -> tuple[str, str, float, Any, Any]:
        """(model, version, event time, prediction, label): the fast path, else the full decoder."""
        value, headers = record.value, record.headers
        if value is not None and len(value) <= max_bytes and (
                not headers or (len(headers) == 1 and headers[0][0] == "content-type")
                or not any(name.lower().startswith("ce_") for name, _ in headers)):
            try:
                e = _decoder.decode(value)
                time = e.time
                at = datetime.fromisoformat(time[:-1] + "+00:00" if time[-1] == "Z" else time).timestamp()
                data = e.data
                return e.subject, data.model_version, at, data.prediction, data.label
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError, IndexError):
                pass                         # the full decoder accepts it, or says why not
        decoded = decode(value, headers, accepts=(ev.FeedbackReceived.TYPE,), max_bytes=max_bytes)
        data = decoded.data
        return (decoded.event.subject, data.model_version, decoded.event.timestamp,
                data.prediction, data.label)

    # --- closing ----------------------------------------------------------------------------
    def _closed(self, part: _Partition, now: float, caught_up: bool) -> list:
        """Reports of the windows of this partition that are due, and the expired memory."""
        clock = max(part.watermark, now) if caught_up else part.watermark
        out = []
        models = self.ctx.models
        for key, (count, total, _) in sorted(part.open.items(), key=lambda kv: kv[0][2]):
            model, version, start = key
            policy: m.MetricPolicy = models[model].metrics
            size = int(policy.window_seconds)
            if count <= 0 or not m.closable(start, size, policy.grace_seconds, clock):
                continue
            event = build(ev.MetricReported(
                metric=policy.metric, value=total / count, count=count, model_version=version,
                window_start=start, window_end=start + size), model, source=self.ctx.opts.source,
                id=f"window-{model}-{version}-{size}s-{int(start)}")
            out.append((event, (part, key)))
        for key, end in list(part.reported.items()):
            policy = models[key[0]].metrics
            if clock - end > retention(int(policy.window_seconds), policy.grace_seconds):
                del part.reported[key]
        return out
