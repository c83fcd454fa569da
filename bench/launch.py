"""Benchmark: launch latency — a data-arrival event sent → the first line of the training step.

    python -m bench.launch [--quick] [--launches 20]

A real stack (embedded broker, worker, local launcher) with one model per launch whose pipeline
is one Python step whose first line records `time.time()` into its outputs. The bench sends a
data event, waits for the run to end, reads the step's first-line time from the run directory,
and goes again, `launches` times (plus one warm-up). Where the time goes, per launch (wall clock, one machine):

    request built      the training request's `time` (trigger agent decided)
    run submitted      the TrainingStarted event's `time` (trainer agent: submit returned)
    runner started     the runner's `started_at` in status.json (supervisor process up)
    step first line    the step's own first statement (its interpreter has started)

Beside it, the bare floor on this machine: `subprocess.Popen([python, "-c", ...])` to the
first line of that process (one interpreter start, nothing else). Quoted beside it, not
measured (this bench never runs Dagster): the reference point of the issue that set the launch
goal, a Dagster sensor (1 s interval) with its subprocess launcher, p50 3.85 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

GOAL_P50_MS = 300.0
DAGSTER_P50_MS = 3850.0        # not measured here: see DAGSTER_SOURCE
DAGSTER_SOURCE = ("issue 7 (performance goals): a Dagster sensor with a 1 s interval and its subprocess "
                  "launcher, measured once on this kind of machine; Dagster is not run by this bench")
MODEL = "launch"
STEP = ("import time; t = time.time()\n"
        "import json, os\n"
        "open(os.environ['LOOPLINE_OUTPUTS'], 'w').write(json.dumps({'first_line_at': t}))\n")


def run(launches: int = 20, settle: float = 2.0) -> dict[str, Any]:
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    # One model per launch: a model still busy with the previous run would coalesce the event
    # into a follow-up (one training in flight per model), and that is not what is measured.
    names = [f"{MODEL}{i:02d}" for i in range(launches + 1)]
    models = [common.model(name, [{"name": "train", "command": common.python_step(STEP)}])
              for name in names]
    stages: dict[str, list[float]] = {k: [] for k in ("request", "submitted", "runner", "step")}
    with common.stack(models, observe=("training", "training_requests")) as s, \
            Publisher(s.bootstrap, s.settings.topics) as bus:
        time.sleep(settle)
        observer = s.observer
        for i in range(launches + 1):                       # the first one warms up
            event = build(ev.DataArrived(uri=f"file:///bench/launch/b{i}.parquet", rows=1,
                                         version=f"b{i}"), names[i], source="bench/launch")
            sent = time.time()
            bus.publish(event)
            request = observer.wait_for(lambda o: [d for d in o.of_type(ev.TrainingRequested.TYPE)
                                                   if d.event.causationid == event.id], 30,
                                        "the training request")[0]
            ended = observer.wait_for(lambda o: [d for d in o.events if d.event.type in (
                ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE)
                and d.event.causationid == request.event.id], 30, "the run's end")[0]
            started = [d for d in observer.of_type(ev.TrainingStarted.TYPE)
                       if d.event.causationid == request.event.id][0]
            run_dir = s.state_dir / "runs" / ended.data.run_name
            first_line = json.loads((run_dir / "steps" / "train.outputs.json").read_text())["first_line_at"]
            runner = json.loads((run_dir / "status.json").read_text())["started_at"]
            if i == 0:
                continue
            stages["request"].append(request.event.timestamp - sent)
            stages["submitted"].append(started.event.timestamp - sent)
            stages["runner"].append(runner - sent)
            stages["step"].append(first_line - sent)
    bare = _bare_interpreter(launches)
    step = common.summary_ms(stages["step"])
    return {
        "benchmark": "launch", "launches": launches, "machine": common.machine(),
        "stages": {name: common.summary_ms(values) for name, values in stages.items()},
        "launch": step, "bare_interpreter": common.summary_ms(bare),
        "ratio_p50": common.ratio(step["p50_ms"], common.summary_ms(bare)["p50_ms"]),
        "quoted": {"dagster_sensor_subprocess_p50_ms": DAGSTER_P50_MS, "source": DAGSTER_SOURCE},
        "goal_p50_ms": GOAL_P50_MS,
        "holds": step["p50_ms"] <= GOAL_P50_MS,
    }


def _bare_interpreter(count: int) -> list[float]:
    """Popen → first line of a `python -c` process: the floor of any launch of a Python step."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        for _ in range(count):
            started = time.time()
            subprocess.run([sys.executable, "-c", f"import time; open({str(path)!r}, 'w').write(repr(time.time()))"],
                           check=True)
            out.append(float(path.read_text()) - started)
    return out


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"launch latency: data event sent → ... ({result['launches']} launches)")
    for column in ("stage (cumulative from the send)", "p50", "p99", "max"):
        table.add_column(column, justify="left" if column.startswith("stage") else "right")
    names = {"request": "training request built (trigger)", "submitted": "run submitted (trainer)",
             "runner": "runner started (status.json)", "step": "step's first line"}
    for key, label in names.items():
        row = result["stages"][key]
        table.add_row(label, f"{row['p50_ms']:.0f} ms", f"{row['p99_ms']:.0f} ms", f"{row['max_ms']:.0f} ms")
    bare = result["bare_interpreter"]
    table.add_row("bare: Popen → first line of `python -c`", f"{bare['p50_ms']:.0f} ms",
                  f"{bare['p99_ms']:.0f} ms", f"{bare['max_ms']:.0f} ms")
    console = Console()
    console.print(table)
    console.print(f"p50 {result['launch']['p50_ms']:.0f} ms (goal <= {GOAL_P50_MS:.0f} ms); "
                  f"Dagster sensor + subprocess: {dagster_quoted(result)}")


def dagster_quoted(result: dict[str, Any]) -> str:
    """The Dagster reference point of a launch result, marked as quoted, with its source."""
    quoted = result["quoted"]
    return common.quoted(f"{quoted['dagster_sensor_subprocess_p50_ms'] / 1000:.2f} s", quoted["source"])


BENCH = common.Bench("launch", run, show, full={"launches": 20}, quick={"launches": 3, "settle": 1.0},
                     doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
