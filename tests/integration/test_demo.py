"""`loopline demo`, the README's first command, runs to its summary and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_loop_and_summarises(tmp_path):
    # 4 batches: two trainings (one promoted, one rejected), ~25 s each on a slow day here; the
    # drift half of the story (batch 4 on) is tests/integration/test_drift_loop.py's.
    out = subprocess.run([sys.executable, "-m", "loopline.cli", "demo", "--batches", "4",
                          "--state-dir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=400,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for phrase in ("data.arrived", "training.requested", "model.evaluated", "deployment.done",
                   "Versions", "Summary", "answering on the serving endpoint", "mlflow ui"):
        assert phrase in text, phrase
    promoted = [line for line in text.splitlines() if "│ promoted " in line or "│ promoted  " in line]
    versions = [line for line in text.splitlines() if line.startswith("│ v")]
    assert len(versions) >= 2 and promoted, text[-3000:]
    assert (tmp_path / "demo" / "mlflow.db").exists()
