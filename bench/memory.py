"""Benchmark: worker memory — RSS of the worker process idle, and while it works.

    python -m bench.memory [--quick] [--feedback 200000]

A real stack with the repository's own `loopline.yaml` (the demo's model: drift monitor and
online metric configured, so the drift process pool and the feedback consumer run). Idle: the
worker's RSS (VmRSS of /proc/<pid>/status) a few seconds after it is ready, and that of its
child processes (the drift pool, the launcher's fork server) beside it. Under load: the peak
while it aggregates `feedback` feedback events and decides on a burst of data events.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml

from bench import common, throughput

GOAL_IDLE_MB = 400.0


def children(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                cmd = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            out[int(kid)] = cmd
    return out


def _describe(cmd: str) -> str:
    for needle, name in (("triggers.spawner", "launcher fork server"),
                         ("resource_tracker", "multiprocessing resource tracker"),
                         ("multiprocessing.spawn", "drift check process (Evidently)"),
                         ("multiprocessing.forkserver", "multiprocessing fork server")):
        if needle in cmd:
            return name
    return cmd[:60]


def run(feedback: int = 200_000, idle_seconds: float = 5.0) -> dict[str, Any]:
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    config = yaml.safe_load((common.REPO / "loopline.yaml").read_text())
    models = config["models"]
    for model in models:
        model["pipeline"]["workdir"] = str(common.REPO)
        model["pipeline"]["steps"] = [{"name": "train", "command": ["true"]}]   # nothing trains here
        model["gate"]["from_step"] = "train"
    name = models[0]["name"]
    with common.stack(models) as s:
        pid = s.worker.proc.pid
        time.sleep(idle_seconds)
        idle = common.rss_mb(pid)
        kids = {f"{_describe(cmd)} (pid {kid})": common.rss_mb(kid) for kid, cmd in children(pid).items()}
        peak = idle or 0.0
        items = [(0, name.encode(), value.replace(b'"subject":"f0"', f'"subject":"{name}"'.encode()))
                 for _, _, value in throughput.records(feedback, 1)]
        asyncio.run(throughput.load(s.bootstrap, s.settings.topics.feedback, s.settings.partitions, items))
        with Publisher(s.bootstrap, s.settings.topics) as bus:
            for i in range(200):
                bus.send(build(ev.DataArrived(uri=f"file:///bench/memory/b{i}.parquet", rows=1,
                                              version=f"b{i}"), name, source="bench/memory"))
            bus.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            peak = max(peak, common.rss_mb(pid) or 0.0)
            if throughput.counted(s.worker.web_port) >= feedback:
                break
            time.sleep(0.05)
        after = common.rss_mb(pid)
    return {"benchmark": "memory", "machine": common.machine(), "idle_mb": round(idle or 0, 1),
            "children_idle_mb": {k: round(v or 0, 1) for k, v in kids.items()},
            "load_peak_mb": round(peak, 1), "after_load_mb": round(after or 0, 1),
            "feedback_events": feedback, "goal_idle_mb": GOAL_IDLE_MB,
            "holds": bool(idle and idle <= GOAL_IDLE_MB)}


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="worker memory (RSS, MB)")
    table.add_column("process / moment")
    table.add_column("RSS", justify="right")
    table.add_row("worker, idle", f"{result['idle_mb']:.0f}")
    table.add_row(f"worker, peak under load ({result['feedback_events']:,} feedback + 200 data events)",
                  f"{result['load_peak_mb']:.0f}")
    table.add_row("worker, after the load", f"{result['after_load_mb']:.0f}")
    for name, mb in result["children_idle_mb"].items():
        table.add_row(f"  child: {name}, idle", f"{mb:.0f}")
    Console().print(table)


BENCH = common.Bench("memory", run, show, full={"feedback": 200_000},
                     quick={"feedback": 5000, "idle_seconds": 2.0}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
