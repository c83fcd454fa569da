"""`loopline demo`, the README's first command, runs to its summary and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def kill_all_with_home(home) -> None:
    """SIGKILL every process whose environment has HOME=`home`: the demo and all it started."""
    marker = f"HOME={home}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue                                  # gone already, or not ours to read


def test_demo_runs_the_loop_and_summarises(tmp_path):
    # 2 batches: one training, promoted and served (~25 s of steps on a slow day here, 200 s for
    # 4 batches under the suite's load); rejection and drift are test_loop's and test_drift_loop's.
    # If it overruns, everything it started goes too: a plain kill of the demo once left its
    # broker and serving endpoint running (their own sessions), eating CPU for the rest of the suite.
    demo = subprocess.Popen([sys.executable, "-m", "loopline.cli", "demo", "--batches", "2",
                             "--family-members", "1", "--state-dir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    try:
        stdout, stderr = demo.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        kill_all_with_home(tmp_path)
        stdout, stderr = demo.communicate()
        pytest.fail(f"the demo overran 400 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    out = subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for phrase in ("data.arrived", "training.requested", "model.evaluated", "deployment.done",
                   "Versions", "Summary", "answering on the serving endpoint"):
        assert phrase in text, phrase
    promoted = [line for line in text.splitlines() if "│ promoted " in line or "│ promoted  " in line]
    versions = [line for line in text.splitlines() if line.startswith("│ v")]
    assert len(versions) >= 1 and promoted, text[-3000:]
    # the family act: region.north made by its one batch, trained, promoted, its own champion
    assert "Family region" in text, text[-3000:]
    north = [line for line in text.splitlines() if line.startswith("│ region.north ")]
    assert len(north) == 1 and "promoted" in north[0] and "│ v1 " in north[0], north or text[-3000:]
    assert (tmp_path / "demo" / "mlflow.db").exists()
    # Its last lines say where to look at what it did: MLflow, and the page on a stack kept up.
    last = text.rstrip().splitlines()[-3:]
    assert last[0].startswith("See the runs: mlflow ui --backend-store-uri sqlite:///"), last
    assert last[1].startswith("See it on the page") and "in memory" in last[1], last
    assert last[2].split()[:3] == ["loopline", "dev", "--demo-batches"] and last[2].split()[3] == "2", last
    assert "http://127.0.0.1:8090" in last[2], last
