"""Benchmark: how the worker's costs grow with the number of models (first cut of issue 18).

    python -m bench.scale [--quick] [--counts 10,100,1000] [--partitions 4]
    python -m bench.scale --counts 10,100,1000,10000

For each count N, a real stack (embedded broker, worker process) on a `loopline.yaml` of N plain
models (no families yet): each a one-step local pipeline (`true`) whose retrain threshold
(`min_new_rows`) is far above anything sent here, so nothing trains. In order:

1. start-up, cold: the worker process's age (from /proc, jiffies) when it first answers /readyz
   and the leader's clock has ticked (LocalStack's own readiness), on empty state;
2. RSS idle: VmRSS of the worker a few seconds after it is ready;
3. tick CPU: the worker's user + system CPU seconds (/proc/<pid>/stat) per wall second over a
   few idle seconds (the clock ticks once a second and each tick visits every model of its
   partition), as % of one core;
4. every model is given state: one data-arrival event each (1 row, below its threshold), and the
   bench waits until the trigger's changelog holds a state for each of them;
5. `loopline status`: the CLI as a subprocess against the stack (it reads the decision topics,
   the trigger's changelog and MLflow), wall time to exit;
6. start-up after SIGKILL: `kill -9` of the worker, then `LocalStack.restart_worker()` timed:
   a new process, table recovery from the changelog, group join, ready and ticking. The
   embedded broker keeps a dead member's partitions until its session times out (the stack sets
   LOOPLINE_SESSION_TIMEOUT=6 s), and that wait is part of this figure, as it would be in life.

`loopline lineage MODEL VERSION` needs a registered version, and nothing trains here: the bench
runs it once to show it refuses, and reports it as not measured.

Each metric's growth is fitted over N (least squares: constant, a + b·ln N, a + b·N) and the
fit is printed beside the points. The fit is only as good as the points: with two counts any
two-parameter model passes through both, and the bench says so.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import common

# min_new_rows far above the 1 row each model gets: state is stored, no training starts.
THRESHOLD = 1_000_000_000
FLAT_SPREAD = 0.15              # points within ±15 % of their mean: called constant
METRICS: dict[str, tuple[str, str]] = {       # key -> (row label, unit)
    "startup_cold_s": ("start-up to ready, cold (empty state)", "s"),
    "startup_after_kill_s": ("start-up after SIGKILL (state recovered)", "s"),
    "rss_idle_mb": ("worker RSS idle", "MB"),
    "tick_cpu_pct": ("tick CPU idle (% of a core)", "%"),
    "status_s": ("`loopline status`", "s"),
}
LINEAGE_SKIPPED = ("not measured: `loopline lineage MODEL VERSION` needs a registered model version "
                   "and no model trains in this bench")


def bench_models(count: int) -> list[dict]:
    return [common.model(name, [{"name": "train", "command": ["true"]}], min_new_rows=THRESHOLD)
            for name in names(count)]


def names(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"s{i:0{width}d}" for i in range(count)]


# --- /proc ------------------------------------------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()      # fields from 3 (state) on; comm may hold spaces


def cpu_time(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _HZ


def age_seconds(pid: int) -> float:
    """How long ago the process started (uptime now minus its start time, both since boot)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(_stat(pid)[19]) / _HZ


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _end_orphans(pids: list[int]) -> None:
    """The children of a SIGKILLed worker (launcher fork server...) that outlived it: ours, by pid."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- fitting ----------------------------------------------------------------------------------------

def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of y ≈ a + b·x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def fit(counts: list[int], values: list[float]) -> dict[str, Any]:
    """The growth model among constant, log N and linear N that describes the points.

    Constant when every point is within FLAT_SPREAD of the mean, or the point at the largest N
    is not FLAT_SPREAD (of the mean) above the one at the smallest (noise, not growth), or when
    both other fits slope downwards; otherwise whichever of log and linear leaves the smaller
    squared error (with two points both pass through them exactly: linear, the safer guess for
    extrapolating, flagged as undetermined)."""
    pairs = sorted((n, v) for n, v in zip(counts, values) if v is not None and math.isfinite(v))
    if not pairs:
        return {"model": None, "text": "no points"}
    ns, ys = [float(n) for n, _ in pairs], [v for _, v in pairs]
    mean = sum(ys) / len(ys)
    models: dict[str, dict[str, float]] = {"constant": {"a": mean, "b": 0.0}}
    for name, transform in (("log", math.log), ("linear", lambda n: n)):
        a, b = _least_squares([transform(n) for n in ns], ys)
        models[name] = {"a": a, "b": b}
    for name, m in models.items():
        transform = {"constant": lambda n: 0.0, "log": math.log, "linear": lambda n: n}[name]
        m["sse"] = sum((m["a"] + m["b"] * transform(n) - y) ** 2 for n, y in zip(ns, ys))
    # Noise, not growth: every point near the mean, or the last (largest N) hardly above the first.
    flat = (mean == 0 or max(abs(y - mean) for y in ys) <= FLAT_SPREAD * abs(mean)
            or ys[-1] - ys[0] <= FLAT_SPREAD * abs(mean))
    rising = [name for name in ("log", "linear") if models[name]["b"] > 0]
    if flat or not rising or len(ys) < 2:
        best = "constant"
    else:
        best = min(rising, key=lambda name: (models[name]["sse"], name != "linear"))
    undetermined = len(ys) <= 2 and best != "constant"
    total = sum((y - mean) ** 2 for y in ys)
    r2 = {name: (round(1 - m["sse"] / total, 4) if total else None) for name, m in models.items()}
    return {"model": best, "a": models[best]["a"], "b": models[best]["b"], "r2": r2,
            "undetermined": undetermined, "points": len(ys),
            "fits": {name: {"a": m["a"], "b": m["b"], "sse": m["sse"]} for name, m in models.items()}}


def fmt(value: float | None, unit: str) -> str:
    """A value with a readable unit: seconds as s/ms/µs, MB as MB/KB, % as %."""
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if unit == "s":
        if magnitude >= 1 or magnitude == 0:
            return f"{value:.3g} s"
        if magnitude >= 1e-3:
            return f"{value * 1e3:.3g} ms"
        return f"{value * 1e6:.3g} µs"
    if unit == "MB":
        return f"{value:.4g} MB" if magnitude >= 1 or magnitude == 0 else f"{value * 1024:.3g} KB"
    return f"{value:.3g} %"


def describe_fit(f: dict[str, Any], unit: str) -> str:
    if f.get("model") is None:
        return "no points"
    a, b = f["a"], f["b"]
    if f["model"] == "constant":
        text = f"≈ {fmt(a, unit)} (constant)"
    else:
        term = "N" if f["model"] == "linear" else "ln N"
        sign = "+" if a >= 0 else "−"
        text = f"≈ {fmt(b, unit)} × {term} {sign} {fmt(abs(a), unit)} ({f['model']})"
    if f.get("undetermined"):
        text += "; 2 points: log and linear not told apart"
    return text


# --- measuring ----------------------------------------------------------------------------------------

def _cli(s, *args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "loopline.cli", *args], env=s.env(), capture_output=True,
                          text=True, timeout=timeout, cwd=str(common.REPO))
    return time.perf_counter() - started, done


def _give_state(s, models: list[str], timeout: float) -> float:
    """One data event per model (below its threshold); seconds until the trigger's changelog
    holds a state with new rows for every model."""
    from loopline.commands.snapshot import model_states
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    started = time.perf_counter()
    with Publisher(s.bootstrap, s.settings.topics) as bus:
        for name in models:
            bus.send(build(ev.DataArrived(uri=f"file:///bench/scale/{name}/b0.parquet", rows=1, version="b0"),
                           name, source="bench/scale"))
        bus.flush()
    wanted = set(models)
    deadline = time.monotonic() + timeout
    while True:
        states = model_states(s.bootstrap, s.settings.group)
        stored = {name for name, state in states.items() if name in wanted and state.new_rows >= 1}
        if stored == wanted:
            return time.perf_counter() - started
        s.worker.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"state stored for {len(stored)} of {len(wanted)} models after {timeout:.0f} s")
        time.sleep(0.5)


def measure(count: int, *, partitions: int, idle_seconds: float, cpu_seconds_window: float,
            say: Callable[[str], None], lineage_probe: bool) -> dict[str, Any]:
    models = names(count)
    row: dict[str, Any] = {"models": count}
    orphans: list[int] = []
    started = time.perf_counter()
    try:
        with common.stack(bench_models(count), partitions=partitions) as s:
            row["stack_up_s"] = round(time.perf_counter() - started, 3)   # broker, topics, observer too
            pid = s.worker.proc.pid
            row["startup_cold_s"] = round(age_seconds(pid), 3)
            say(f"start-up cold {fmt(row['startup_cold_s'], 's')} (whole stack {row['stack_up_s']:.2f} s)")

            time.sleep(idle_seconds)
            row["rss_idle_mb"] = round(common.rss_mb(pid) or math.nan, 1)
            say(f"RSS idle {fmt(row['rss_idle_mb'], 'MB')}")

            c0, w0 = cpu_time(pid), time.perf_counter()
            time.sleep(cpu_seconds_window)
            c1, w1 = cpu_time(pid), time.perf_counter()
            # one jiffy over the window is the resolution: a perfectly idle worker reads as that floor
            used = max(c1 - c0, 1 / _HZ)
            row["tick_cpu_pct"] = round(100 * used / (w1 - w0), 3)
            row["tick_cpu_window_s"] = round(w1 - w0, 2)
            say(f"tick CPU {fmt(row['tick_cpu_pct'], '%')} of a core over {w1 - w0:.1f} s idle")

            row["state_stored_s"] = round(_give_state(s, models, timeout=60 + count * 0.05), 3)
            say(f"state stored for all {count} models in {row['state_stored_s']:.2f} s")

            elapsed, done = _cli(s, "status")
            if done.returncode != 0:
                raise RuntimeError(f"loopline status exited {done.returncode}: {done.stderr[-2000:]}")
            row["status_s"] = round(elapsed, 3)
            row["status_output_lines"] = len(done.stdout.splitlines())
            say(f"`loopline status` {fmt(elapsed, 's')} ({row['status_output_lines']} lines)")

            if lineage_probe:
                elapsed, done = _cli(s, "lineage", models[0], "1")
                row["lineage_probe"] = {"returncode": done.returncode, "seconds": round(elapsed, 3),
                                        "stderr": done.stderr.strip().splitlines()[-1:] or [""]}
                say(f"`loopline lineage {models[0]} 1` exits {done.returncode} "
                    f"({row['lineage_probe']['stderr'][0][:100]}): not timed")

            orphans = _descendants(pid)
            s.worker.kill()                                 # SIGKILL, and reaped
            killed = time.perf_counter()
            s.restart_worker()
            row["startup_after_kill_s"] = round(time.perf_counter() - killed, 3)
            row["startup_after_kill_process_s"] = round(age_seconds(s.worker.proc.pid), 3)
            say(f"start-up after SIGKILL {fmt(row['startup_after_kill_s'], 's')} "
                f"(new process to ready {fmt(row['startup_after_kill_process_s'], 's')})")
            time.sleep(idle_seconds)
            row["rss_idle_after_recovery_mb"] = round(common.rss_mb(s.worker.proc.pid) or math.nan, 1)
            say(f"RSS idle after recovery {fmt(row['rss_idle_after_recovery_mb'], 'MB')}")
            # both workers' logs (one file), kept beside the results for a look at where time went
            common.RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.worker.log, common.RESULTS / f"scale-worker-{count}.log")
    finally:
        _end_orphans(orphans)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def run(counts: str = "10,100,1000", partitions: int = 4, idle_seconds: float = 3.0,
        cpu_seconds: float = 5.0) -> dict[str, Any]:
    ns = [int(c) for c in str(counts).split(",") if c.strip()]
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i, count in enumerate(ns):
        def say(text: str, count: int = count) -> None:
            print(f"  [N={count:,}] {text}", flush=True)

        print(f"scale: {count:,} models (load {os.getloadavg()[0]:.2f})", flush=True)
        rows.append(measure(count, partitions=partitions, idle_seconds=idle_seconds,
                            cpu_seconds_window=cpu_seconds, say=say, lineage_probe=i == 0))
    fits = {key: fit([r["models"] for r in rows], [r.get(key) for r in rows]) for key in METRICS}
    for key, (_, unit) in METRICS.items():
        fits[key]["text"] = describe_fit(fits[key], unit)
    return {"benchmark": "scale", "counts": ns, "partitions": partitions, "machine": common.machine(),
            "idle_seconds": idle_seconds, "cpu_window_seconds": cpu_seconds,
            "session_timeout_s": float(os.environ.get("LOOPLINE_SESSION_TIMEOUT", "6")),
            "rows": rows, "fits": fits, "lineage": LINEAGE_SKIPPED,
            "lineage_probe": rows[0].get("lineage_probe") if rows else None,
            "seconds": round(time.perf_counter() - began, 1)}


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    load = result["machine"]["load"]
    table = Table(title=f"growth with the number of models ({result['partitions']} partitions, "
                        f"{result['machine']['cores']} cores, load {load[0]:.2f} at the end)")
    table.add_column("metric")
    for row in result["rows"]:
        table.add_column(f"N={row['models']:,}", justify="right")
    table.add_column("fit")
    for key, (label, unit) in METRICS.items():
        table.add_row(label, *[fmt(row.get(key), unit) for row in result["rows"]], result["fits"][key]["text"])
    table.add_row("`loopline lineage`", *["—" for _ in result["rows"]], "not measured (see below)")
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(f"lineage: {result['lineage']}")
    probe = result.get("lineage_probe")
    if probe:
        console.print(f"  probe: exit {probe['returncode']}: {probe['stderr'][0]}")
    console.print(f"after SIGKILL the broker keeps the dead member's partitions until its session times out "
                  f"(LOOPLINE_SESSION_TIMEOUT={result['session_timeout_s']:g} s): part of that figure. "
                  f"`status` reads every decision event, the trigger's changelog and MLflow.")


BENCH = common.Bench("scale", run, show, full={"counts": "10,100,1000", "partitions": 4},
                     quick={"counts": "10,100", "idle_seconds": 2.0, "cpu_seconds": 3.0}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
