"""Shared presentation for the operator commands: one-line event summaries, run links, times."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from streams import events as ev

SHORT_TYPE_PREFIX = "io.loopline."


def short_type(event_type: str) -> str:
    return event_type[len(SHORT_TYPE_PREFIX):] if event_type.startswith(SHORT_TYPE_PREFIX) else event_type


def matches_type(event_type: str, wanted: str | None) -> bool:
    """`--type data.arrived`, `--type io.loopline.data.arrived` and `--type data` all match."""
    if not wanted:
        return True
    short = short_type(event_type)
    return wanted in (event_type, short) or short.startswith(wanted + ".")


def summary(data: ev.EventData) -> str:
    """What an event says, in one line."""
    if isinstance(data, ev.DataArrived):
        return f"{data.rows} rows, version {data.version} at {data.uri}"
    if isinstance(data, ev.DriftDetected):
        return f"drift share {data.drift_share:g} on {data.dataset_version} vs {data.reference_version}"
    if isinstance(data, ev.MetricReported):
        return f"{data.metric}={data.value:g} over {data.count}"
    if isinstance(data, ev.OperatorCommand):
        version = f" v{data.version}" if data.version else ""
        return f"{data.command}{version} by {data.operator}: {data.reason}"
    if isinstance(data, ev.TrainingRequested):
        return f"{data.reason}: {data.rows} new rows, data {', '.join(data.data_versions) or '-'}"
    if isinstance(data, ev.TrainingStarted):
        return f"run {data.run_name} on {data.launcher}" + ("" if data.created else " (already existed)")
    if isinstance(data, ev.TrainingSucceeded):
        return f"run {data.run_name} succeeded" + _secs(data.duration_seconds)
    if isinstance(data, ev.TrainingFailed):
        return f"run {data.run_name} failed: {data.reason}" + _secs(data.duration_seconds)
    if isinstance(data, ev.ModelEvaluated):
        value = data.candidate_metrics.get(data.metric)
        score = f"{data.metric}={value:.4g}" if isinstance(value, float) else data.metric
        return f"v{data.version} {'passed' if data.passed else 'rejected'} ({score}): {'; '.join(data.reasons)}"
    if isinstance(data, ev.ModelPromoted):
        return f"v{data.version} promoted (champion was v{data.champion_version or '-'})"
    if isinstance(data, ev.DeploymentDone):
        return f"{data.alias} -> v{data.version} (was v{data.previous_version or '-'}): {data.reason}"
    if isinstance(data, ev.DeploymentRolledBack):
        return f"{data.alias} rolled back v{data.from_version or '-'} -> v{data.version}: {data.reason}"
    if isinstance(data, ev.DeploymentRefused):
        return f"refused v{data.version or '-'}: {data.reason}"
    return ""


def _secs(value: float | None) -> str:
    return f" in {value:.1f}s" if value is not None else ""


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A clickable link when MLflow is a server, else the `runs:/` URI MLflow itself accepts."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"runs:/{run_id}"


def ago(timestamp: float | None, now: float | None = None) -> str:
    if timestamp is None:
        return "-"
    seconds = max(0.0, (now or time.time()) - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value
