"""Shared presentation for the operator commands: event types, run links, times.

What an event says, in one line, is `streams.describe`: the demo shows events too.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

SHORT_TYPE_PREFIX = "io.loopline."


def short_type(event_type: str) -> str:
    return event_type[len(SHORT_TYPE_PREFIX):] if event_type.startswith(SHORT_TYPE_PREFIX) else event_type


def matches_type(event_type: str, wanted: str | None) -> bool:
    """`--type data.arrived`, `--type io.loopline.data.arrived` and `--type data` all match."""
    if not wanted:
        return True
    short = short_type(event_type)
    return wanted in (event_type, short) or short.startswith(wanted + ".")


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
