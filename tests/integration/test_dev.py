"""`loopline dev`: the stack comes up, says where each part answers and how to reach it from another
terminal, and Ctrl-C stops every process it started and exits 0."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.integration.test_demo import kill_all_with_home
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, and theirs), from /proc."""
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"                 # a zombie has exited; only its parent's wait is missing


def test_dev_prints_where_everything_answers_and_ctrl_c_stops_every_process(tmp_path):
    ui_port, serve_port = free_port(), free_port()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO)}
    dev = subprocess.Popen([sys.executable, "-m", "loopline.cli", "dev", "--state-dir", str(tmp_path / "dev"),
                            "--ui-port", str(ui_port), "--serve-port", str(serve_port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                           start_new_session=True)      # its own process group, as in a terminal
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(dev.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Ctrl-C stops everything" in line for line in lines) or dev.poll() is not None,
                   timeout=90, what="loopline dev to print that the stack is up")
        out = "".join(lines)
        assert dev.poll() is None, out
        urls = dict(re.findall(r"^  (page|serving|worker)\s+(http://\S+)", out, re.M))
        assert urls["page"] == f"http://127.0.0.1:{ui_port}", out
        assert urls["serving"] == f"http://127.0.0.1:{serve_port}", out
        worker = urls["worker"].removesuffix("/metrics")
        assert get(f"{worker}/readyz")[0] == 200
        status, metrics = get(urls["worker"])
        assert status == 200 and b"loopline_decisions_total" in metrics
        status, models = get(f"{urls['serving']}/models")
        assert status == 200 and b"classifier" in models
        assert "(not running" not in out, out          # the page came up...
        assert get(urls["page"] + "/")[0] == 200         # ...and answers
        assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'dev' / 'mlflow.db'}" in out
        # The printed environment points another terminal's loopline at this stack.
        (exports,) = re.findall(r"^  export (.+)$", out, re.M)
        other = dict(item.split("=", 1) for item in shlex.split(exports))
        assert {"LOOPLINE_BROKER", "LOOPLINE_TOPIC_PREFIX", "LOOPLINE_STATE_DIR"} <= set(other)
        topics = subprocess.run([sys.executable, "-m", "loopline.cli", "topics"], env={**env, **other},
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert topics.returncode == 0 and f"{other['LOOPLINE_TOPIC_PREFIX']}." in topics.stdout, topics.stderr

        started = descendants(dev.pid)
        assert len(started) >= 4                       # broker, worker, serving, page (at least)
        os.killpg(dev.pid, signal.SIGINT)             # Ctrl-C: the terminal signals the whole group
        assert dev.wait(timeout=60) == 0, "".join(lines)
        reader.join(5)
        wait_until(lambda: not [pid for pid in started if alive(pid)], timeout=10,
                   what="every process loopline dev started to be gone")
        out = "".join(lines)
        assert "loopline dev: stopped" in out
        # An orderly stop: the broker outlived everything that talks to it (no client lost it).
        assert "ECONNREFUSED" not in out and "Traceback" not in out, out[-3000:]
    finally:
        if dev.poll() is None:
            kill_all_with_home(tmp_path)
            dev.wait()
