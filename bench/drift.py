"""Benchmark: the drift monitor's check against a cached reference vs Evidently alone.

    python -m bench.drift [--quick] [--size 100000] [--columns 10] [--repeats 3]

Same run, same data: a training set of `size` rows x `columns` numeric columns, its reference
recorded the way the job SDK records it (a seeded 5,000-row sample, parquet), and two current
batches of `size` rows read from parquet: one from the training distribution, one with 60% of
the columns shifted.

- evidently alone: what a script without loopline does per batch: read the reference and the
  batch, `Report([DataDriftPreset()]).run(batch, reference)`, read the result. No HTML saved.
- monitor: `adapters.drift.EvidentlyDrift.check`, the code the worker's process pool runs:
  reference cached per version (loaded once, at the warm-up), the preset's stat tests run once,
  and on drift the same report rendered and saved as HTML.

Medians of `repeats` timed runs after one warm-up each. Prints a table and writes JSON to
bench/results/. `run(size)` returns the numbers for `make bench` and the unit test.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench import common


def _data(size: int, columns: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(columns)]
    training = pd.DataFrame(rng.standard_normal((size, columns)), columns=names)
    clean = pd.DataFrame(rng.standard_normal((size, columns)), columns=names)
    drifted = clean.copy()
    for i, name in enumerate(names[: max(1, round(columns * 0.6))]):
        drifted[name] = drifted[name] + 0.5 + 0.25 * i
    return training, clean, drifted


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    fn()                                                 # warm-up: imports, caches
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def run(size: int = 100_000, columns: int = 10, repeats: int = 3) -> dict[str, Any]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from agents.policies import DriftPolicy
    from agents.ports import DriftRequest
    from stepkit import reference as ref_mod
    from adapters.drift import EvidentlyDrift

    training, clean, drifted = _data(size, columns)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        root = Path(tmp)
        meta = ref_mod.write(training, root / "reference", dataset_versions=["train"])
        batches = {}
        for name, frame in (("clean", clean), ("drifted", drifted)):
            batches[name] = root / f"{name}.parquet"
            frame.to_parquet(batches[name], index=False)

        def evidently_alone(path: Path):
            reference = pd.read_parquet(root / "reference" / ref_mod.SAMPLE_FILE)
            current = pd.read_parquet(path)
            snapshot = Report([DataDriftPreset()]).run(current, reference)
            return snapshot.dict()["metrics"][0]["value"]          # DriftedColumnsCount

        loads = {"n": 0}

        def load(model: str, version: str):
            loads["n"] += 1
            return ref_mod.read(root / "reference")

        monitor = EvidentlyDrift(load, report_dir=root / "reports")
        policy = DriftPolicy()                                      # Evidently's own defaults

        def monitor_check(name: str):
            return monitor.check(DriftRequest("bench", "1", "data", name, policy,
                                              uri=batches[name].as_uri()))

        rows: dict[str, dict[str, Any]] = {}
        for name in ("clean", "drifted"):
            median, times, value = _median(lambda: evidently_alone(batches[name]), repeats)
            rows[f"evidently_alone_{name}"] = {"median_s": median, "runs_s": times,
                                               "drifted_columns": int(value["count"])}
            median, times, result = _median(lambda: monitor_check(name), repeats)
            rows[f"monitor_{name}"] = {
                "median_s": median, "runs_s": times, "drifted": result.drifted,
                "drifted_columns": sum(c["drifted"] for c in result.columns.values()),
                "report": result.report_uri is not None, "reference_cached": result.reference_cached}
    speedup = {name: rows[f"evidently_alone_{name}"]["median_s"] / rows[f"monitor_{name}"]["median_s"]
               for name in ("clean", "drifted")}
    return {
        "benchmark": "drift", "size": size, "columns": columns, "repeats": repeats,
        "reference_rows": meta["rows_sampled"], "reference_loads": loads["n"], "results": rows,
        "speedup": speedup, "monitor_not_slower": all(s >= 1.0 for s in speedup.values()),
        "same_verdict": all(rows[f"evidently_alone_{n}"]["drifted_columns"] == rows[f"monitor_{n}"]["drifted_columns"]
                            for n in ("clean", "drifted")),
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"drift check: {result['size']:,} rows x {result['columns']} columns vs a "
                        f"{result['reference_rows']:,}-row reference (median of {result['repeats']})")
    for column in ("batch", "evidently alone", "monitor (cached reference)", "speed-up",
                   "drifted columns (ev / monitor)", "monitor wrote report"):
        table.add_column(column, justify="left" if column == "batch" else "right")
    for name in ("clean", "drifted"):
        alone, mon = result["results"][f"evidently_alone_{name}"], result["results"][f"monitor_{name}"]
        table.add_row(name, f"{alone['median_s']:.3f} s", f"{mon['median_s']:.3f} s",
                      f"{result['speedup'][name]:.2f}x",
                      f"{alone['drifted_columns']} / {mon['drifted_columns']}",
                      "yes" if mon["report"] else "no")
    console = Console()
    console.print(table)
    console.print(f"reference loaded {result['reference_loads']}x; monitor not slower: "
                  f"{result['monitor_not_slower']}; same verdict: {result['same_verdict']}")


BENCH = common.Bench("drift", run, show, full={"size": 100_000, "columns": 10, "repeats": 3},
                     quick={"size": 3000, "columns": 4, "repeats": 1}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
