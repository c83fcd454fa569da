"""The drift monitor agent: data batches and the prediction log → DriftDetected.

For each data-arrival batch (against the current champion) and for each full buffer of the
serving prediction log (against the version that made the predictions), it asks the
`DriftChecker` port to compare the data with that version's reference. The check is CPU work
of up to seconds: it runs in a process pool (`adapters.drift`), awaited here without blocking
the event loop, so the other agents keep their latency; only this agent's own stream waits.

Data batches are few: their check is awaited in the agent, so the drift event is published before
the batch's offset is committed. The prediction log is a stream: its checks run as background
tasks, one at a time per model version, while the agent keeps consuming (a full stream buffer
would stall the worker's whole consumer); rows that arrive meanwhile keep filling the next
buffer, capped at `BUFFER_CAP` x `prediction_rows` (oldest dropped). The prediction buffer is a
monitoring sample in memory: a crash loses at most one partial buffer per version.

A drifted batch publishes `DriftDetected` (per-column scores and methods, both dataset
versions, the report's MLflow URI), caused by the batch's event, so the retrain that follows
is traceable to it. A clean batch is counted (`loopline_drift_checks{outcome="clean"}` on
/metrics, and `stats` for the status page) and is a decision on the record too (`Context.record`,
policy "drift", outcome "no_drift" with the share and the threshold), as is a check skipped for
want of a champion or a reference: "why did this batch not retrain?" then has an answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from prometheus_client import Counter, Histogram

from agents import policies as p
from agents.context import Context
from agents.edge import PermanentError
from agents.ports import DriftChecker, DriftRequest, NoReference
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent

log = logging.getLogger("loopline.drift")
OUTCOMES = ("drifted", "clean", "skipped", "failed")
BUFFER_CAP = 10


class DriftMonitor:
    def __init__(self, ctx: Context, checker: DriftChecker | None):
        self.ctx, self.checker = ctx, checker
        self.buffers: dict[tuple[str, str], p.PredictionBuffer] = {}
        self.running: dict[tuple[str, str], asyncio.Task] = {}
        self.stats: dict[str, dict] = defaultdict(
            lambda: {**{o: 0 for o in OUTCOMES}, "seconds": 0.0, "last": None})
        registry = ctx.metrics.registry
        self.checks = Counter("loopline_drift_checks", "Drift checks by model, origin (data, "
                              "predictions) and outcome (drifted, clean, skipped, failed)",
                              ["model", "origin", "outcome"], registry=registry)
        self.seconds = Histogram("loopline_drift_check_seconds", "Wall time of drift checks",
                                 ["origin"], registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))

    async def handle(self, d: Decoded) -> None:
        model = self.ctx.models.get(d.event.subject)
        policy = getattr(model, "drift", None)
        if self.checker is None or policy is None:
            return
        data = d.data
        if isinstance(data, ev.DataArrived) and policy.check_data:
            champion = await asyncio.to_thread(self.ctx.registry.champion, model.name, model.alias)
            if champion.version is None:
                self._count(model.name, "data", "skipped", "no champion to compare with")
                await self.ctx.record("drift", "skipped", "not checked for drift: no champion to "
                                      "compare with", model.name, d.event)
                return
            await self.run(d.event, DriftRequest(model.name, champion.version, "data",
                                                 data.version, policy, uri=data.uri))
        elif isinstance(data, ev.PredictionLogged) and policy.check_predictions:
            key = (model.name, data.model_version)
            buffer = self.buffers.setdefault(key, p.PredictionBuffer())
            buffer.add(data.prediction_ids, data.features, data.predictions)
            excess = len(buffer.rows) - BUFFER_CAP * policy.prediction_rows
            if excess > 0:
                del buffer.rows[:excess]
            if buffer.ready(policy) and key not in self.running:
                rows, version = buffer.take()
                request = DriftRequest(model.name, data.model_version, "predictions", version,
                                       policy, rows=tuple(rows))
                self.running[key] = asyncio.ensure_future(self._background(key, d.event, request))

    async def _background(self, key, event: CloudEvent, request: DriftRequest) -> None:
        try:
            await self.run(event, request)
        except PermanentError as exc:               # counted as failed by `run`
            log.warning("%s: %s", request.model, exc)
        except Exception as exc:  # noqa: BLE001 - a background check must not die silently
            self._count(request.model, request.origin, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(key, None)

    async def run(self, event: CloudEvent, request: DriftRequest) -> None:
        try:
            result = await self.checker.check(request)
        except NoReference as exc:
            self._count(request.model, request.origin, "skipped", str(exc))
            await self.ctx.record("drift", "skipped", f"not checked for drift: {exc}", request.model, event)
            return
        except (FileNotFoundError, ValueError, KeyError) as exc:
            # The batch itself is unusable (missing file, no common column): retrying won't help.
            self._count(request.model, request.origin, "failed", str(exc))
            raise PermanentError(f"drift check of {request.dataset_version} failed: "
                                 f"{type(exc).__name__}: {exc}") from None
        self.seconds.labels(request.origin).observe(result.seconds)
        stats = self.stats[request.model]
        stats["seconds"] += result.seconds
        stats["last"] = {"dataset_version": request.dataset_version, "origin": request.origin,
                         "model_version": request.model_version, "drifted": result.drifted,
                         "drift_share": result.drift_share, "seconds": round(result.seconds, 3),
                         "reference_cached": result.reference_cached}
        if not result.drifted:
            self._count(request.model, request.origin, "clean",
                        f"no drift in {request.dataset_version} (share {result.drift_share:.2f})")
            await self.ctx.record("drift", "no_drift", _clean(request, result), request.model, event)
            return
        await self.ctx.publish(ev.DriftDetected(
            dataset_version=request.dataset_version, reference_version=result.reference_version,
            drift_share=result.drift_share, columns={c: dict(v) for c, v in result.columns.items()},
            report_uri=result.report_uri, model_version=request.model_version,
            origin=request.origin, rows=result.rows), request.model, event)
        self._count(request.model, request.origin, "drifted",
                    f"drift in {request.dataset_version}: share {result.drift_share:.2f}, "
                    f"report {result.report_uri}")

    def _count(self, model: str, origin: str, outcome: str, why: str) -> None:
        self.stats[model][outcome] += 1
        self.checks.labels(model, origin, outcome).inc()
        log.info("%s: drift check (%s) %s: %s", model, origin, outcome, why)


def _clean(request: DriftRequest, result) -> str:
    """Why a check found no drift, in the policy's terms (see `policy.drift.decide_drift`)."""
    drifted = sum(1 for column in result.columns.values() if column.get("drifted"))
    what = "predictions" if request.origin == "predictions" else request.dataset_version
    return (f"no drift in {what} against v{request.model_version}'s reference: share of drifted "
            f"columns {result.drift_share:.2f} < {request.policy.drift_share:g} "
            f"({drifted} of {len(result.columns)} drifted)")
