"""Sweep overhead: N trivial trials at parallelism P through the sweep runner (LocalLauncher →
runner → triggers.sweep coordinator → one process per trial) against the same N trials run back
to back by a plain `optuna.Study.optimize` loop in one process.

    python -m bench.sweep [--quick] [--trials 16] [--parallelism 4]

Both sides do the same trivial trial (the objective is a formula of two parameters, reported once
as an intermediate value) on the same storage (an Optuna JournalStorage file); no MLflow on either
side, so the ratio is what the fan-out costs: a process start, the step SDK's import, the report
round trip to the coordinator, and the runner's own start (Optuna's import) — per sweep, not per
trial. Wall clock from submit to the run's terminal status vs from create_study to optimize's end.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

TRIAL = ("from stepkit import job; ctx = job.context(); x = float(ctx.params['x']); "
         "y = int(ctx.params['y']); v = 1 - (x - 0.3) ** 2 - 0.01 * y; ctx.report(0, v); "
         "ctx.output(candidate_metrics={'score': v})")
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "int", "low": 1, "high": 8}}


def _objective(trial: Any) -> float:
    x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("y", 1, 8)
    value = 1 - (x - 0.3) ** 2 - 0.01 * y
    trial.report(value, 0)
    return value


def through_the_runner(root: Path, trials: int, parallelism: int) -> dict[str, Any]:
    from triggers.local import LocalLauncher
    from triggers.pipeline import LaunchSpec, Pipeline, Step

    sweep = {"space": SPACE, "objective": "score", "trials": trials, "parallelism": parallelism,
             "pruner": "none", "seed": 0}
    spec = LaunchSpec(run_name="bench-sweep", model="bench", workdir=str(root),
                      pipeline=Pipeline((Step("train", tuple(common.python_step(TRIAL)), sweep=sweep),)),
                      env={"LOOPLINE_MODEL": "bench", "LOOPLINE_IDEMPOTENCY_KEY": "bench-1",
                           "LOOPLINE_STATE_DIR": str(root / "state")})
    launcher = LocalLauncher(root / "state")
    try:
        started = time.perf_counter()
        launcher.submit(spec)
        while True:
            status = launcher.status(spec.run_name)
            if status is not None and status.terminal:
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        launcher.close()
    if status.phase != "Succeeded":
        raise RuntimeError(f"the sweep failed: {status.reason} {status.log_tail}")
    return {"seconds": round(seconds, 3), "trials": status.outputs["train"]["trials"]}


def in_one_process(root: Path, trials: int) -> dict[str, Any]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "loop.journal")))
    study = optuna.create_study(storage=storage, study_name="loop", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(_objective, n_trials=trials)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "complete": len(study.trials)}


def run(trials: int = 16, parallelism: int = 4) -> dict[str, Any]:
    import optuna  # noqa: F401 - imported before the clock starts on the baseline's side

    with tempfile.TemporaryDirectory(prefix="loopline-bench-sweep-") as tmp:
        root = Path(tmp)
        sweep = through_the_runner(root, trials, parallelism)
        loop = in_one_process(root, trials)
    return {"benchmark": "sweep", "trials": trials, "parallelism": parallelism, "machine": common.machine(),
            "sweep": sweep, "loop": loop, "ratio": common.ratio(sweep["seconds"], loop["seconds"]),
            "per_trial_ms": round(1000 * sweep["seconds"] / trials, 1)}


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep overhead: {result['trials']} trivial trials "
                        f"({result['machine']['cores']} cores)")
    for column in ("how", "wall time", "per trial", "ratio"):
        table.add_column(column, justify="left" if column == "how" else "right")
    sweep, loop, n = result["sweep"], result["loop"], result["trials"]
    table.add_row(f"sweep runner, parallelism {result['parallelism']} (a process per trial)",
                  f"{sweep['seconds']:.2f} s", f"{1000 * sweep['seconds'] / n:.0f} ms", f"{result['ratio']}x")
    table.add_row("Study.optimize in one process (baseline)", f"{loop['seconds']:.2f} s",
                  f"{1000 * loop['seconds'] / n:.0f} ms", "1x")
    Console().print(table)


BENCH = common.Bench("sweep", run, show, full={"trials": 16, "parallelism": 4},
                     quick={"trials": 4, "parallelism": 2}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
