"""Benchmark: how the worker's costs grow with the number of models (issue 18).

    python -m bench.scale [--quick] [--counts 10,100,1000] [--partitions 4]
    python -m bench.scale --counts 10,100,1000,10000 [--broker embedded|kafka|HOST:PORT]

For each count N, a real stack (embedded broker, worker process) on a `loopline.yaml` of one
family of N listed members (`fleet.s0000`...; `bench_models` is the one place that writes it): each a one-step
local pipeline (`true`) whose retrain threshold (`min_new_rows`) is far above the 1 row most
events carry, so a model trains only when an event says it brought THRESHOLD rows. In order:

1. start-up, cold: the worker process's age (from /proc, jiffies) when it first answers /readyz
   and the leader's clock has ticked (LocalStack's own readiness), on empty state;
2. RSS idle: VmRSS of the worker a few seconds after it is ready;
3. tick CPU: the worker's user + system CPU seconds (/proc/<pid>/stat) per wall second over a
   few idle seconds (the clock ticks once a second and each tick visits every model of its
   partition; the consumers' fetches poll the broker), as % of one core;
4. every model is given state: one data-arrival event each (1 row, below its threshold), and the
   bench waits until the trigger's changelog holds a state for each of them; then the tick CPU
   again (a tick reads and decodes each model's state: dearer than an empty table's default);
5. `loopline status`: the CLI as a subprocess against the stack (it reads the decision topics,
   the trigger's changelog and MLflow), wall time to exit;
6. trigger latency under a spread load (bench.spread): data events at `rate`/s round-robin over
   all N models for `trigger_seconds`, a `share` of them crossing their model's threshold; p50
   and p99 of event sent → TrainingRequested published, for the crossing ones, with a bare
   aiokafka probe beside them; the worker's RSS under that load (its largest sample);
7. start-up after SIGKILL: `kill -9` of the worker, then `LocalStack.restart_worker()` timed:
   a new process, table recovery from the changelog, group join, ready and ticking. The
   embedded broker keeps a dead member's partitions until its session times out (the stack sets
   LOOPLINE_SESSION_TIMEOUT=6 s), and that wait is part of this figure, as it would be in life.

Then, once: the partition count (`sweep_partitions`, e.g. 4,16,32) at `sweep_models` models:
start-up cold, tick CPU and the spread trigger latency, each on its own stack (the main row is
reused where it has that count and partitions); and feedback throughput with one worker and
with two on this machine (bench.workers).

`loopline lineage MODEL VERSION` needs a registered version, and nothing trains here: the bench
runs it once to show it refuses, and reports it as not measured.

Each metric's growth is fitted over N (least squares: constant, a + b·ln N, a + b·N) and the
fit is printed beside the points. The fit is only as good as the points: with two counts any
two-parameter model passes through both, and the bench says so. Issue 18's goals (at 10,000
models) are checked at the largest N measured, and the table says at which N that was.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Callable

from bench import common, procfs

# min_new_rows far above the 1 row each model gets: state is stored, no training starts.
THRESHOLD = 1_000_000_000
FLAT_SPREAD = 0.15              # points within ±15 % of their mean: called constant
METRICS: dict[str, tuple[str, str]] = {       # key -> (row label, unit)
    "startup_cold_s": ("start-up to ready, cold (empty state)", "s"),
    "startup_after_kill_s": ("start-up after SIGKILL (state recovered)", "s"),
    "rss_idle_mb": ("worker RSS idle", "MB"),
    "rss_load_mb": ("worker RSS under the spread load", "MB"),
    "tick_cpu_pct": ("tick CPU idle (% of a core)", "%"),
    "tick_cpu_state_pct": ("tick CPU idle, every model with state", "%"),
    "status_s": ("`loopline status`", "s"),
    "trigger_p50_ms": ("trigger p50, spread load", "ms"),
    "trigger_p99_ms": ("trigger p99, spread load", "ms"),
    "probe_p99_ms": ("bare probe p99 beside it (one hop)", "ms"),
}
# Issue 18's goals at 10,000 models: key -> (limit, how it is worded); trigger p99 is relative to
# the smallest N's p99 in the same run.
GOALS: dict[str, tuple[float, str]] = {
    "startup_cold_s": (15.0, "≤ 15 s"),
    "startup_after_kill_s": (15.0, "≤ 15 s"),
    "rss_idle_mb": (1024.0, "≤ 1 GB"),
    "tick_cpu_pct": (5.0, "≤ 5 %"),
    "tick_cpu_state_pct": (5.0, "≤ 5 %"),
    "status_s": (2.0, "≤ 2 s"),
    "trigger_p99_ms": (1.5, "≤ 1.5 × the smallest N's"),
}
SWEEP_METRICS: dict[str, tuple[str, str]] = {
    "startup_cold_s": ("start-up to ready, cold", "s"),
    "tick_cpu_pct": ("tick CPU idle (% of a core)", "%"),
    "trigger_p50_ms": ("trigger p50, spread load", "ms"),
    "trigger_p99_ms": ("trigger p99, spread load", "ms"),
    "probe_p99_ms": ("bare probe p99 beside it", "ms"),
}
GOAL_MODELS = 10_000
RATE = 50.0                     # spread load: data events per second, round-robin over all models
SHARE = 0.25                    # ...of which this share crosses its model's threshold
LINEAGE_SKIPPED = ("not measured: `loopline lineage MODEL VERSION` needs a registered model version "
                   "and no model trains in this bench")


FAMILY = "fleet"


def bench_models(count: int) -> dict:
    """The generated `loopline.yaml`: one family of `count` members (README "Model families"),
    listed so that they exist from the start, as N plain models did in the first cut: start-up
    and memory are then for N models whether or not they have had an event."""
    family = common.model(FAMILY, [{"name": "train", "command": ["true"]}], min_new_rows=THRESHOLD)
    keys = member_keys(count)
    return {"families": [{**family, "members": keys, "max_members": max(count, 1)}]}


def member_keys(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"s{i:0{width}d}" for i in range(count)]


def names(count: int) -> list[str]:
    return [f"{FAMILY}.{key}" for key in member_keys(count)]


# --- /proc (bench.procfs) ----------------------------------------------------------------------------

_HZ = procfs.HZ
cpu_time, age_seconds, _descendants = procfs.cpu_time, procfs.age_seconds, procfs.descendants


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
    if unit == "ms":
        return fmt(value / 1000, "s")
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


def _idle_cpu(pid: int, window: float) -> tuple[float, float]:
    """(% of one core, seconds) the process used over `window` idle wall seconds."""
    c0, w0 = cpu_time(pid), time.perf_counter()
    time.sleep(window)
    c1, w1 = cpu_time(pid), time.perf_counter()
    # one jiffy over the window is the resolution: a perfectly idle worker reads as that floor
    used = max(c1 - c0, 1 / _HZ)
    return round(100 * used / (w1 - w0), 3), round(w1 - w0, 2)


def _spread(s, models: list[str], load: dict[str, Any], row: dict[str, Any], say) -> None:
    """The trigger under a spread load (bench.spread) into `row`."""
    from bench import spread

    got = spread.run(s, models, threshold=THRESHOLD, **load)
    row["trigger"] = got
    row["trigger_p50_ms"], row["trigger_p99_ms"] = got["trigger"]["p50_ms"], got["trigger"]["p99_ms"]
    row["probe_p99_ms"] = got["probe"]["p99_ms"]
    row["rss_load_mb"] = got["rss_max_mb"]
    say(f"trigger at {got['rate']:g} events/s over {len(models):,} models ({got['requests']} requests, "
        f"{got['missing']} missing): p50 {row['trigger_p50_ms']:.1f} ms, p99 {row['trigger_p99_ms']:.1f} ms "
        f"(bare probe p99 {row['probe_p99_ms']:.1f} ms); worker CPU {got['worker_cpu_pct']} %, "
        f"RSS max {got['rss_max_mb']} MB")


def measure(count: int, *, partitions: int, idle_seconds: float, cpu_seconds_window: float,
            say: Callable[[str], None], lineage_probe: bool, load: dict[str, Any] | None = None,
            full: bool = True, bootstrap: str | None = None) -> dict[str, Any]:
    """One stack on `count` models. `full`: everything; else start-up, tick CPU, state and the
    spread trigger only (the partition sweep)."""
    models = names(count)
    row: dict[str, Any] = {"models": count, "partitions": partitions}
    orphans: list[int] = []
    started = time.perf_counter()
    try:
        with common.stack(bench_models(count), partitions=partitions, bootstrap=bootstrap) as s:
            row["stack_up_s"] = round(time.perf_counter() - started, 3)   # broker, topics, observer too
            pid = s.worker.proc.pid
            row["startup_cold_s"] = round(age_seconds(pid), 3)
            say(f"start-up cold {fmt(row['startup_cold_s'], 's')} (whole stack {row['stack_up_s']:.2f} s)")

            time.sleep(idle_seconds)
            row["rss_idle_mb"] = round(common.rss_mb(pid) or math.nan, 1)
            say(f"RSS idle {fmt(row['rss_idle_mb'], 'MB')}")

            row["tick_cpu_pct"], row["tick_cpu_window_s"] = _idle_cpu(pid, cpu_seconds_window)
            say(f"tick CPU {fmt(row['tick_cpu_pct'], '%')} of a core over {row['tick_cpu_window_s']:.1f} s idle")

            row["state_stored_s"] = round(_give_state(s, models, timeout=60 + count * 0.05), 3)
            say(f"state stored for all {count} models in {row['state_stored_s']:.2f} s")
            if full:
                time.sleep(min(idle_seconds, 2.0))          # the state's changelog writes settle
                row["tick_cpu_state_pct"], _ = _idle_cpu(pid, cpu_seconds_window)
                say(f"tick CPU with state {fmt(row['tick_cpu_state_pct'], '%')} of a core")

            if full:
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

            if load:
                _spread(s, models, load, row, say)

            if full:
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
            # the workers' logs (one file), kept beside the results for a look at where time went
            common.RESULTS.mkdir(parents=True, exist_ok=True)
            suffix = "" if full else f"-p{partitions}"
            shutil.copyfile(s.worker.log, common.RESULTS / f"scale-worker-{count}{suffix}.log")
    finally:
        _end_orphans(orphans)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 18's goals, checked at the largest N measured (the issue sets them at 10,000)."""
    if not rows:
        return {}
    top, base = rows[-1], rows[0]
    out: dict[str, Any] = {"at_models": top["models"]}
    for key, (limit, words) in GOALS.items():
        value = top.get(key)
        if key == "trigger_p99_ms":
            ratio = common.ratio(value or math.nan, base.get(key) or math.nan)
            out[key] = {"goal": words, "value": value, "ratio": ratio, "baseline_models": base["models"],
                        "holds": None if ratio is None or len(rows) < 2 else ratio <= limit}
        else:
            out[key] = {"goal": words, "value": value,
                        "holds": None if value is None or not math.isfinite(value) else value <= limit}
    return out


def run(counts: str = "10,100,1000", partitions: int = 4, idle_seconds: float = 3.0,
        cpu_seconds: float = 5.0, rate: float = RATE, trigger_seconds: float = 30.0, share: float = SHARE,
        sweep_models: int = 1000, sweep_partitions: str = "4,16,32",
        feedback_events: int = 300_000, broker: str = "embedded") -> dict[str, Any]:
    with common.broker(broker) as bootstrap:
        return _run(counts, partitions, idle_seconds, cpu_seconds, rate, trigger_seconds, share, sweep_models,
                    sweep_partitions, feedback_events, broker, None if broker == "embedded" else bootstrap)


def _run(counts, partitions, idle_seconds, cpu_seconds, rate, trigger_seconds, share, sweep_models,
         sweep_partitions, feedback_events, broker, bootstrap) -> dict[str, Any]:
    ns = [int(c) for c in str(counts).split(",") if c.strip()]
    load = {"rate": rate, "seconds": trigger_seconds, "share": share} if trigger_seconds > 0 else None
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i, count in enumerate(ns):
        def say(text: str, count: int = count) -> None:
            print(f"  [N={count:,}] {text}", flush=True)

        print(f"scale: {count:,} models (load {os.getloadavg()[0]:.2f})", flush=True)
        rows.append(measure(count, partitions=partitions, idle_seconds=idle_seconds,
                            cpu_seconds_window=cpu_seconds, say=say, lineage_probe=i == 0, load=load,
                            bootstrap=bootstrap))
    fits = {key: fit([r["models"] for r in rows], [r.get(key) for r in rows]) for key in METRICS}
    for key, (_, unit) in METRICS.items():
        fits[key]["text"] = describe_fit(fits[key], unit)

    checked = goals(rows)
    verdicts = [g["holds"] for key, g in checked.items() if key != "at_models"]
    # The goals are set at 10,000 models: a verdict for the run only when it went that far.
    holds = (all(verdicts) if None not in verdicts else None) if ns and max(ns) >= GOAL_MODELS else None

    sweep: list[dict[str, Any]] = []
    for p in [int(x) for x in str(sweep_partitions or "").split(",") if x.strip()]:
        reuse = next((r for r in rows if r["models"] == sweep_models and r["partitions"] == p), None)
        if reuse is not None:
            print(f"scale: partitions {p} at {sweep_models:,} models: the main row's", flush=True)
            sweep.append({**{k: reuse.get(k) for k in ("models", "partitions", *SWEEP_METRICS)},
                          "from_main_row": True})
            continue

        def say(text: str, p: int = p) -> None:
            print(f"  [P={p}, N={sweep_models:,}] {text}", flush=True)

        print(f"scale: {p} partitions, {sweep_models:,} models (load {os.getloadavg()[0]:.2f})", flush=True)
        sweep.append(measure(sweep_models, partitions=p, idle_seconds=idle_seconds,
                             cpu_seconds_window=cpu_seconds, say=say, lineage_probe=False, load=load,
                             full=False, bootstrap=bootstrap))

    feedback = None
    if feedback_events:
        from bench import workers

        print(f"scale: feedback throughput, one worker then two ({feedback_events:,} events each; "
              f"load {os.getloadavg()[0]:.2f})", flush=True)
        feedback = workers.run(events=feedback_events, partitions=partitions, bootstrap=bootstrap)
        for key in ("one", "two"):
            got = feedback[key]
            print(f"  [{got['workers']} worker{'s' if got['workers'] > 1 else ''}] {got['per_second'] or 0:,}/s "
                  f"(per worker {got['per_worker']}; machine busy {got['machine_busy_pct']} % of "
                  f"{feedback['cores']} cores, workers' CPU {got['worker_cpu_pct']} %)", flush=True)

    return {"benchmark": "scale", "counts": ns, "partitions": partitions, "machine": common.machine(),
            "broker": common.broker_name(broker),
            "idle_seconds": idle_seconds, "cpu_window_seconds": cpu_seconds,
            "session_timeout_s": float(os.environ.get("LOOPLINE_SESSION_TIMEOUT", "6")),
            "fetch_max_wait_ms": os.environ.get("LOOPLINE_FETCH_MAX_WAIT_MS") or "default",
            "load": load, "rows": rows, "fits": fits, "goals": checked, "holds": holds, "lineage": LINEAGE_SKIPPED,
            "lineage_probe": rows[0].get("lineage_probe") if rows else None,
            "sweep": {"models": sweep_models, "rows": sweep} if sweep else None,
            "feedback": feedback, "seconds": round(time.perf_counter() - began, 1)}


def _mark(goal: dict[str, Any] | None) -> str:
    if not goal:
        return ""
    mark = {True: " ✓", False: " ✗", None: ""}[goal.get("holds")]
    if "ratio" in goal:
        return f"{goal['goal']}: {goal['ratio']}×{mark}" if goal.get("ratio") is not None else goal["goal"]
    return f"{goal['goal']}{mark}"


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    load = result["machine"]["load"]
    console = Console(width=max(Console().width, 160))
    spread = result.get("load")
    table = Table(title=f"growth with the number of models ({result.get('broker', 'embedded (Tansu)')}, "
                        f"{result['partitions']} partitions, "
                        f"{result['machine']['cores']} cores, load {load[0]:.2f} at the end)")
    table.add_column("metric")
    for row in result["rows"]:
        table.add_column(f"N={row['models']:,}", justify="right")
    table.add_column("fit")
    goals_ = result.get("goals") or {}
    table.add_column(f"goal (at N={goals_.get('at_models', 0):,})")
    for key, (label, unit) in METRICS.items():
        table.add_row(label, *[fmt(row.get(key), unit) for row in result["rows"]], result["fits"][key]["text"],
                      _mark(goals_.get(key)))
    table.add_row("`loopline lineage`", *["—" for _ in result["rows"]], "not measured (see below)", "")
    console.print(table)
    if spread:
        console.print(f"spread load: {spread['rate']:g} data events/s round-robin over all N models for "
                      f"{spread['seconds']:g} s, {spread['share']:.0%} of them crossing a threshold (the "
                      f"trigger figures are for those: event sent → TrainingRequested published).")
    console.print(f"lineage: {result['lineage']}")
    probe = result.get("lineage_probe")
    if probe:
        console.print(f"  probe: exit {probe['returncode']}: {probe['stderr'][0]}")
    console.print(f"after SIGKILL the broker keeps the dead member's partitions until its session times out "
                  f"(LOOPLINE_SESSION_TIMEOUT={result['session_timeout_s']:g} s): part of that figure. "
                  f"`status` reads every decision event, the trigger's changelog and MLflow.")
    sweep = result.get("sweep")
    if sweep:
        t = Table(title=f"partitions at {sweep['models']:,} models")
        t.add_column("metric")
        for row in sweep["rows"]:
            t.add_column(f"P={row['partitions']}" + (" (main row)" if row.get("from_main_row") else ""),
                         justify="right")
        for key, (label, unit) in SWEEP_METRICS.items():
            t.add_row(label, *[fmt(row.get(key), unit) for row in sweep["rows"]])
        console.print(t)
    feedback = result.get("feedback")
    if feedback:
        t = Table(title=f"feedback throughput: {feedback['events']:,} events drained, {feedback['partitions']} "
                        f"partitions, {feedback['cores']} cores")
        for column in ("workers", "events/s", "per worker", "workers' CPU", "machine busy"):
            t.add_column(column, justify="right")
        for key in ("one", "two"):
            got = feedback[key]
            t.add_row(str(got["workers"]), f"{got['per_second'] or 0:,}", ", ".join(f"{n:,}" for n in got["per_worker"]),
                      ", ".join(f"{c:g} %" for c in got["worker_cpu_pct"]),
                      f"{got['machine_busy_pct']:g} % of {feedback['cores'] * 100} %")
        console.print(t)
        console.print(f"two workers / one: {feedback['speed_up']}×")


BENCH = common.Bench("scale", run, show,
                     full={"counts": "10,100,1000", "partitions": 4, "rate": RATE, "trigger_seconds": 30.0,
                           "share": SHARE, "sweep_models": 1000, "sweep_partitions": "4,16,32",
                           "feedback_events": 300_000, "broker": "embedded"},
                     quick={"counts": "10,100", "idle_seconds": 2.0, "cpu_seconds": 3.0, "trigger_seconds": 8.0,
                            "sweep_models": 100, "sweep_partitions": "4,16", "feedback_events": 50_000},
                     doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
