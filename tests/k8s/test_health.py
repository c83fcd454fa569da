"""The worker's /livez and /readyz, which the Helm chart's probes and compose's healthcheck use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from streams.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.timeout(120)
def test_worker_is_live_then_ready_once_it_has_joined_its_group(bootstrap, prefix, tmp_path):
    config = tmp_path / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "m", "pipeline": {"workdir": str(REPO), "steps": [
        {"name": "evaluate", "command": ["python", "-c", "pass"]}]}}]}))
    port = free_port()
    env = {**os.environ, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_TOPIC_PREFIX": prefix, "LOOPLINE_GROUP": prefix,
           "LOOPLINE_STATE_DIR": str(tmp_path / "state"), "LOOPLINE_CONFIG": str(config),
           "LOOPLINE_WEB_PORT": str(port), "LOOPLINE_WEB_BIND": "127.0.0.1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "loopline.cli", "worker"], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        live = ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                live = live or get(f"{base}/livez")
                ready = get(f"{base}/readyz")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
                continue
            if ready[0] == 200:
                break
            assert ready[0] == 503 and ready[1]["ready"] is False  # up, not yet in its group
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert live == (200, {"ok": True})
        assert ready and ready[0] == 200 and ready[1]["ready"] is True, ready
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
