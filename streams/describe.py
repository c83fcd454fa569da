"""One line of plain text per event, for people: what the event says.

The demo's live view, `loopline events tail`, `status` and `lineage` all show events to people;
they share this one description so an event reads the same wherever it appears. A new event
type gets its line here: tests/unit/test_describe.py fails until it has one. The line carries
no markup, because `reason` fields hold whatever a policy, an operator or a failed run wrote: a
caller that prints through rich escapes it and adds its own colour.
"""

from __future__ import annotations

from typing import Any

from streams import events as ev


def describe(data: ev.EventData) -> str:
    """What `data` says, on one line ("" for a type this module does not know)."""
    return " ".join(_describe(data).split())      # a multi-line reason (a traceback) stays one line


def _describe(data: ev.EventData) -> str:
    match data:
        case ev.DataArrived():
            return f"{data.version}: {_count(data.rows, 'row')}"
        case ev.DriftDetected():
            against = (f"v{data.model_version} reference ({data.reference_version})" if data.model_version
                       else f"reference {data.reference_version}")
            drifted = ", ".join(_drifted(column, info) for column, info in data.columns.items()
                                if info.get("drifted")) or "none"
            origin = "predictions " if data.origin == "predictions" else ""
            return (f"{origin}{data.dataset_version} vs {against}: share {data.drift_share:.2f}, "
                    f"drifted: {drifted}")
        case ev.MetricReported():
            over = _count(data.count, "prediction")
            return f"{_v(data.model_version)}{data.metric} {data.value:.3f} over {over}"
        case ev.PredictionLogged():
            return f"v{data.model_version} answered {_count(len(data.prediction_ids), 'row')}"
        case ev.FeedbackReceived():
            predicted = "" if data.prediction is None else f", predicted {data.prediction}"
            within = f" in {data.experiment}" if data.experiment else ""
            return f"{data.prediction_id[:24]} on v{data.model_version}{within}: label {data.label}{predicted}"
        case ev.ShadowPredicted():
            same = sum(a == b for a, b in zip(data.champion, data.challenger))
            return (f"v{data.challenger_version} shadowed v{data.champion_version} on "
                    f"{_count(len(data.prediction_ids), 'row')}, {same} answered alike")
        case ev.RolloutStarted():
            against = f" against v{data.champion_version}" if data.champion_version else ""
            versions = ", ".join(f"v{v}" for v in data.challenger_versions)
            return f"{data.strategy} {data.experiment}: {versions}{against}{_because(data.reason)}"
        case ev.ExperimentUpdated():
            arms = ", ".join(f"v{a.version} {a.weight:.0%} n={a.n}"
                             + (f" mean {a.reward_sum / a.n:.3f}" if a.n else "") for a in data.arms)
            return f"{data.strategy} {data.status} step {data.step}: {arms}"
        case ev.RolloutAnalysed():
            return f"{data.verdict} → {data.action} (step {data.step}): {data.reason}"
        case ev.RollbackRequested():
            return f"v{data.from_version} → v{data.version}: {data.reason}"
        case ev.OperatorCommand():
            version = f" v{data.version}" if data.version else ""
            return f"{data.command}{version} by {data.operator}: {data.reason}"
        case ev.ClockTicked():
            return "this model" if data.partition is None else f"every model on partition {data.partition}"
        case ev.TrainingRequested():
            on = f" on {', '.join(data.data_versions)}" if data.data_versions else ""
            return f"reason={data.reason}{on}"
        case ev.TrainingStarted():
            return f"run {data.run_name} ({data.launcher})" + ("" if data.created else ", already existed")
        case ev.TrainingSucceeded():
            version = _registered_version(data.outputs)
            outcome = f" → v{version}" if version else " succeeded"
            return f"run {data.run_name}{outcome}{_took(data.duration_seconds, 'in')}"
        case ev.TrainingFailed():
            return f"run {data.run_name} failed{_took(data.duration_seconds, 'after')}: {data.reason}"
        case ev.ModelEvaluated():
            verdict = "passed" if data.passed else "rejected"
            return f"v{data.version} {verdict}" + (f": {'; '.join(data.reasons)}" if data.reasons else "")
        case ev.ModelPromoted():
            return f"v{data.version} promoted over v{data.champion_version or '-'}"
        case ev.DeploymentDone():
            was = f" (was v{data.previous_version})" if data.previous_version else ""
            return f"{data.alias} → v{data.version}{was}{_because(data.reason)}"
        case ev.DeploymentRolledBack():
            return (f"{data.alias} rolled back v{data.from_version or '-'} → v{data.version}"
                    f"{_because(data.reason)}")
        case ev.DecisionRecorded():
            return f"{data.policy} → {data.outcome.replace('_', ' ')}{_because(data.reason)}"
        case ev.DeploymentRefused():
            return f"v{data.version}: {data.reason}" if data.version else data.reason
    return ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _v(version: str | None) -> str:
    return f"v{version} " if version else ""


def _took(seconds: float | None, word: str) -> str:
    return f" {word} {seconds:.1f}s" if seconds is not None else ""


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""


def _drifted(column: str, info: dict[str, Any]) -> str:
    """`f5 (Wasserstein distance (normed) 1.49)`; a column's details are free-form, so unchecked."""
    score = info.get("score")
    detail = " ".join([str(info.get("method", "?"))] + (
        [f"{score:.2f}"] if isinstance(score, (int, float)) and not isinstance(score, bool) else []))
    return f"{column} ({detail})"


def _registered_version(outputs: dict[str, dict[str, Any]]) -> str | None:
    """The version a step registered (whichever step did: the evaluator looks the same way)."""
    return next((str(o["model_version"]) for o in outputs.values() if o.get("model_version")), None)
