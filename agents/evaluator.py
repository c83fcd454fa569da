"""The evaluator agent: a succeeded training's scores → ModelEvaluated (+ ModelPromoted).

Scoring a holdout takes minutes and memory, so it is a pipeline step (like TFX's Evaluator);
this agent only reads what that step reported and applies the gate. Whatever is missing or
broken in the report fails closed: no candidate version, unusable metrics, or a champion that
exists but could not be scored all end in a rejection with the reason spelled out.
The ids of the chain (request, training outcome, evaluation, promotion) go onto the version's
`loopline.lineage.*` tags, so `loopline lineage` answers after the topics' retention.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from agents import policies as p
from agents.context import Context
from agents.faults import crash_point
from streams import events as ev
from streams.codec import Decoded

log = logging.getLogger("loopline.evaluator")


def read_report(outputs: Mapping[str, Mapping[str, Any]], step: str, gate: p.Gate):
    """(candidate version, decision) from the pipeline's outputs: pure, tested by tables."""
    report = outputs.get(step) or {}
    version = report.get("candidate_version") or _registered_version(outputs)
    if not version:
        return None, p.Reject("?", (f"step {step!r} reported no candidate version "
                                    "(the job registered no model)",))
    champion = None
    if report.get("champion_version") or report.get("champion_error"):
        # A champion we failed to score is still a champion: compare against nothing usable
        # (which the gate rejects) rather than promote on the absolute bar alone.
        champion = p.Scores(str(report.get("champion_version") or "?"),
                            report.get("champion_metrics") or {})
    candidate = p.Scores(str(version), report.get("candidate_metrics") or {},
                         latency_ms_p95=report.get("candidate_latency_ms_p95"))
    decision = p.decide_promotion(candidate, champion, gate)
    if report.get("champion_error") and isinstance(decision, p.Reject):
        decision = p.Reject(decision.version, decision.reasons + (
            f"champion could not be scored: {report['champion_error']}",))
    return str(version), decision


class Evaluator:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def handle(self, d: Decoded) -> None:
        if not isinstance(d.data, ev.TrainingSucceeded):
            return
        event, data, model = d.event, d.data, self.ctx.model(d.event)
        report = data.outputs.get(model.gate_step) or {}
        version, decision = read_report(data.outputs, model.gate_step, model.gate)
        passed = isinstance(decision, p.Promote)
        champion = report.get("champion_version")
        evaluated = await self.ctx.publish(ev.ModelEvaluated(
            version=version or "?", run_name=data.run_name, metric=model.gate.headline,
            candidate_metrics=_floats(report.get("candidate_metrics")),
            champion_version=str(champion) if champion else None,
            champion_metrics=_floats(report.get("champion_metrics")) if report.get("champion_metrics") else None,
            passed=passed, reasons=list(decision.reasons)), model.name, event)
        if version:
            await asyncio.to_thread(self.ctx.registry.record_evaluation, model.name, version,
                                    passed, decision.reasons)
        crash_point("evaluator.evaluated")
        promoted = None
        if passed:
            promoted = await self.ctx.publish(ev.ModelPromoted(
                version=version, champion_version=str(champion) if champion else None,
                reasons=list(decision.reasons)), model.name, event)
        if version:
            ids = {"training_event_id": event.id, "evaluated_event_id": evaluated.id,
                   "correlation_id": event.correlationid}
            if event.causationid:                        # the watcher reports caused by the request
                ids["request_id"] = event.causationid
            if promoted is not None:
                ids["promoted_event_id"] = promoted.id
            await self.ctx.record_lineage(model.name, version, ids)
        self.ctx.metrics.decision("promotion", "promoted" if passed else "rejected")
        log.info("%s: v%s %s: %s", model.name, version, "promoted" if passed else "rejected",
                 "; ".join(decision.reasons))


def _registered_version(outputs: Mapping[str, Mapping[str, Any]]) -> str | None:
    for step_outputs in outputs.values():
        if step_outputs.get("model_version"):
            return str(step_outputs["model_version"])
    return None


def _floats(metrics) -> dict[str, float | None]:
    """Metrics as numbers for the event; anything unreadable is kept visible as null."""
    out: dict[str, float | None] = {}
    for name, value in (metrics or {}).items():
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            out[str(name)] = None
    return out
