"""Helpers for the end-to-end tests: a test `loopline.yaml`, batches, and waiting on the topics."""

from __future__ import annotations

from pathlib import Path

import yaml

from examples.classifier.data import write_batch
from streams import events as ev
from streams.codec import build

REPO = Path(__file__).resolve().parents[2]
MODEL = "clf"


def write_config(path: Path, *, min_new_rows: int = 500, window: int = 1, min_value: float = 0.6,
                 min_improvement: float = 0.0, steps: list[dict] | None = None) -> Path:
    steps = steps or [
        {"name": "prepare", "command": ["python", "-m", "examples.classifier.prepare"]},
        {"name": "train", "command": ["python", "-m", "examples.classifier.train", "--epochs", "5"],
         "depends": ["prepare"]},
        {"name": "evaluate", "command": ["python", "-m", "examples.classifier.evaluate"],
         "depends": ["train"]},
    ]
    config = {"models": [{
        "name": MODEL,
        "pipeline": {"launcher": "local", "workdir": str(REPO), "steps": steps},
        "retrain": {"min_new_rows": min_new_rows, "window_batches": window},
        "gate": {"metric": "accuracy", "min_value": min_value, "min_improvement": min_improvement},
    }]}
    path.write_text(yaml.safe_dump(config))
    return path


def data_event(index: int, data_dir: Path, rows: int = 500, **kwargs):
    info = write_batch(index, data_dir, rows=rows, **kwargs)
    return build(ev.DataArrived(uri=info["uri"], rows=info["rows"], version=info["version"],
                                digest=info["digest"]), MODEL, source="tests/data")


def outcome_of(observer, request_id: str):
    """The event that ends the chain of a training request: deployed, refused, rejected or failed."""
    by_id = {d.event.id: d for d in observer.events}

    def caused_by_request(d) -> bool:
        current = d
        while current is not None:
            if current.event.id == request_id:
                return True
            current = by_id.get(current.event.causationid or "")
        return False

    for d in observer.events:
        t = d.event.type
        ends = t in (ev.DeploymentDone.TYPE, ev.DeploymentRefused.TYPE, ev.TrainingFailed.TYPE) or (
            t == ev.ModelEvaluated.TYPE and not d.data.passed)
        if ends and caused_by_request(d):
            return d
    return None
