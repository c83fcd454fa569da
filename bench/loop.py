"""Benchmark: loop overhead — data arrived → the promoted model answers, minus the training itself.

    python -m bench.loop [--quick] [--loops 4]

A real stack (embedded broker, worker, serving endpoint, MLflow on SQLite) with one model whose
pipeline is one trivial training step (`bench.steps.trivial_train`: an MLflow run, a registered
constant model, candidate metrics for the gate; it records its own start and end). Per loop the
bench sends a data event and asks the serving endpoint for a prediction every 10 ms until the
new version answers. Overhead = that time − the step's own run time (its process's life, start
to exit, as the runner saw it): everything loopline adds (trigger, launch, watcher, evaluator,
deployer, serving reload).

The first loop is cold (the serving process imports the model flavour on its first load);
the goal is checked on the median of the warm loops. Where the time goes is read from the
events' own `time` attributes.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from bench import common

GOAL_SECONDS = 2.0
MODEL = "loop"
ROW = {"f0": 0.0, "f1": 1.0}


def predict_version(port: int) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/models/{MODEL}/predict",
                                     data=json.dumps({"rows": [ROW]}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["version"]
    except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError):
        return None


def run(loops: int = 4, timeout: float = 120.0) -> dict[str, Any]:
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    step = [sys.executable, "-m", "bench.steps.trivial_train"]
    models = [common.model(MODEL, [{"name": "train", "command": step}])]
    rows = []
    roles = ("training", "training-requests", "evaluation", "promotion", "deployment")
    with common.stack(models, observe=roles, serving=True) as s, \
            Publisher(s.bootstrap, s.settings.topics) as bus:
        observer = s.observer
        for i in range(loops):
            event = build(ev.DataArrived(uri=f"file:///bench/loop/b{i}.parquet", rows=1,
                                         version=f"b{i}"), MODEL, source="bench/loop")
            sent = time.time()
            bus.publish(event)
            # Its request, or (if the trigger had not yet seen the previous run end) the
            # follow-up that coalesced it: either names the event among its causes.
            request = observer.wait_for(lambda o: [d for d in o.of_type(ev.TrainingRequested.TYPE)
                                                   if event.key in d.data.causes], 60,
                                        "the training request")[0]
            chain = request.event.correlationid

            def after_request(o):           # a follow-up shares its chain with the last run
                return [d for d in o.events[o.events.index(request):] if d.event.correlationid == chain]

            done = observer.wait_for(lambda o: [d for d in after_request(o) if d.event.type in (
                ev.DeploymentDone.TYPE, ev.TrainingFailed.TYPE, ev.DeploymentRefused.TYPE)],
                timeout, "the deployment")[0]
            if done.event.type != ev.DeploymentDone.TYPE:
                raise RuntimeError(f"loop {i} ended with {done.event.type}: {done.data}")
            version = done.data.version
            deadline = time.monotonic() + 60
            while predict_version(s.serve_port) != version:
                s.serving.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"serving never answered with v{version}")
                time.sleep(0.01)
            answered = time.time()
            with observer.cond:
                of = {d.event.type: d for d in reversed(after_request(observer))}   # first of each
            succeeded = of[ev.TrainingSucceeded.TYPE]
            times = json.loads((s.state_dir / "runs" / succeeded.data.run_name / "steps" /
                                "train.times.json").read_text())          # written by the runner
            step_seconds = times["finished_at"] - times["started_at"]
            marks = {
                "request": of[ev.TrainingRequested.TYPE].event.timestamp,
                "submitted": of[ev.TrainingStarted.TYPE].event.timestamp,
                "step_started": times["started_at"],
                "step_ended": times["finished_at"],
                "succeeded": succeeded.event.timestamp,
                "evaluated": of[ev.ModelEvaluated.TYPE].event.timestamp,
                "promoted": of[ev.ModelPromoted.TYPE].event.timestamp,
                "deployed": done.event.timestamp,
                "answered": answered,
            }
            previous, stages = sent, {}
            for name, at in marks.items():
                stages[name] = round(at - previous, 3)
                previous = at
            rows.append({"version": version, "total_s": round(answered - sent, 3),
                         "step_s": round(step_seconds, 3),
                         "overhead_s": round(answered - sent - step_seconds, 3), "stages_s": stages})
            time.sleep(0.5)                 # the trigger reads the run's end from another topic
    warm = [r["overhead_s"] for r in rows[1:]] or [r["overhead_s"] for r in rows]
    overhead = statistics.median(warm)
    return {
        "benchmark": "loop", "loops": loops, "machine": common.machine(), "runs": rows,
        "overhead_s": round(overhead, 3), "cold_overhead_s": rows[0]["overhead_s"],
        "goal_s": GOAL_SECONDS, "holds": overhead <= GOAL_SECONDS,
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    labels = {"request": "training request built", "submitted": "run submitted",
              "step_started": "step process started", "step_ended": "step process ended (the step)",
              "succeeded": "watcher reported success", "evaluated": "evaluator: gate applied",
              "promoted": "evaluator: promoted", "deployed": "deployer: alias moved",
              "answered": "serving answers with it"}
    table = Table(title="loop overhead: data event sent → new version answers (s since the previous mark)")
    table.add_column("stage")
    for i, row in enumerate(result["runs"]):
        table.add_column(f"v{row['version']}{' (cold)' if i == 0 else ''}", justify="right")
    for key, label in labels.items():
        table.add_row(label, *(f"{row['stages_s'][key]:.3f}" for row in result["runs"]))
    table.add_row("total", *(f"{row['total_s']:.2f}" for row in result["runs"]))
    table.add_row("overhead = total − step", *(f"{row['overhead_s']:.2f}" for row in result["runs"]))
    console = Console()
    console.print(table)
    console.print(f"overhead (median of warm loops): {result['overhead_s']:.2f} s (goal <= {GOAL_SECONDS} s); "
                  f"cold (serving's first model load): {result['cold_overhead_s']:.2f} s")


BENCH = common.Bench("loop", run, show, full={"loops": 4}, quick={"loops": 2}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
