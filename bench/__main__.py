"""`python -m bench` (`make bench`): every benchmark in turn, one summary table at the end.

    python -m bench [--quick]
                    [--only trigger,trigger@kafka,launch,throughput,throughput@kafka,loop,drift,memory,serving,ui,sweep,scale]

Each benchmark prints its own table and writes its JSON to bench/results/ (`<name>-latest.json`
and a timestamped copy); the summary (goal, measured, bare baseline, ratio, holds) goes to
bench/results/summary-latest.json with the machine it ran on. `--quick` runs every benchmark on
a small size (what the test suite does): the numbers are then not worth quoting.
A full run takes about five minutes on 2 cores (serving: half a minute more; scale: about seven minutes more).
"""

from __future__ import annotations

import argparse
import time
import traceback
from functools import partial
from typing import Any, Callable

from bench import common, drift, launch, loop, memory, scale, serving, sweep, throughput, trigger, ui

def _on(name: str) -> dict[str, str]:
    """`trigger@kafka` runs the trigger bench on Apache Kafka; a bare name on its default broker."""
    return {"broker": name.partition("@")[2]} if "@" in name else {}


BENCHES = {bench.name: bench for bench in (trigger.BENCH, launch.BENCH, throughput.BENCH, loop.BENCH,
                                           drift.BENCH, memory.BENCH, serving.BENCH, ui.BENCH, sweep.BENCH,
                                           scale.BENCH)}
ON_KAFKA = ("trigger", "throughput")      # the bus-bound paths, measured on Apache Kafka too
BENCHES.update({f"{name}@kafka": BENCHES[name] for name in ON_KAFKA})
FULL = {name: partial(bench.run, **{**bench.sizes(), **_on(name)}) for name, bench in BENCHES.items()}
QUICK = {name: partial(bench.run, **{**bench.sizes(quick=True), **_on(name)}) for name, bench in BENCHES.items()}


def _trigger(r: dict) -> dict[str, Any]:
    return {"measured": f"p99 {r['trigger']['p99_ms']:.1f} ms (p50 {r['trigger']['p50_ms']:.1f})",
            "baseline": f"bare send→receive p99 {r['probe']['p99_ms']:.1f} ms", "ratio": f"{r['ratio_p99']}x",
            "note": f"{r['requests']} requests at {r['rate']:g}/s, {r['models']} models"}


def _launch(r: dict) -> dict[str, Any]:
    return {"measured": f"p50 {r['launch']['p50_ms']:.0f} ms (p99 {r['launch']['p99_ms']:.0f})",
            "baseline": f"bare python start p50 {r['bare_interpreter']['p50_ms']:.0f} ms",
            "ratio": f"{r['ratio_p50']}x", "note": f"Dagster sensor + subprocess: {launch.dagster_quoted(r)}"}


def _throughput(r: dict) -> dict[str, Any]:
    return {"measured": f"{r['loopline']['per_second']:,}/s",
            "baseline": f"bare aiokafka consume+parse {r['bare']['per_second']:,}/s", "ratio": f"{r['ratio']}x",
            "note": f"{r['events']:,} events; all in windows: {r['loopline']['counted_in_windows'] == r['events']}; "
                    f"bare librdkafka {(r.get('bare_librdkafka') or {}).get('per_second') or 0:,}/s"}


def _loop(r: dict) -> dict[str, Any]:
    return {"measured": f"{r['overhead_s']:.2f} s",
            "note": f"median of warm loops; cold {r['cold_overhead_s']:.2f} s"}


def _drift(r: dict) -> dict[str, Any]:
    mon, alone = r["results"]["monitor_clean"], r["results"]["evidently_alone_clean"]
    return {"measured": f"{mon['median_s']:.2f} s ({r['size']:,} rows x {r['columns']})",
            "baseline": f"Evidently alone {alone['median_s']:.2f} s",
            "ratio": f"{mon['median_s'] / alone['median_s']:.2f}x", "note": f"same verdict: {r['same_verdict']}"}


def _serving(r: dict) -> dict[str, Any]:
    high = {x["server"]: x for x in r["runs"] if x["concurrency"] == serving.HIGH}
    one = next(x for x in r["runs"] if x["server"] == "loopline" and x["concurrency"] == 1)
    routing = r["routing"]["overhead_p50_ms"]
    return {"measured": f"{high['loopline']['per_second']:,.0f}/s at c={serving.HIGH}; "
                        f"c=1 p99 {one['p99_ms']:.1f} ms",
            "baseline": f"mlflow models serve {high['mlflow']['per_second']:,.0f}/s",
            "ratio": f"{r['ratios']['rps_c32']}x",
            "note": f"routing (bandit - direct) p50 {'not measured' if routing is None else f'{routing:+.2f} ms'}; "
                    f"goals met: {', '.join(k for k, v in r['goals_met'].items() if v) or 'none'}"}


def _ui(r: dict) -> dict[str, Any]:
    return {"measured": f"{r['median_ms']:.0f} ms (median of {r['repeats']})",
            "note": f"{r['events']:,} events: /api/events answered at {r['api_response_end_median_ms']:.0f} ms, "
                    f"drawn {r['draw_after_response_median_ms']:.0f} ms later; {r['dom_nodes']} DOM elements"}


def _sweep(r: dict) -> dict[str, Any]:
    return {"measured": f"{r['sweep']['seconds']:.2f} s ({r['trials']} trials, parallelism {r['parallelism']})",
            "baseline": f"Study.optimize in one process {r['loop']['seconds']:.2f} s", "ratio": f"{r['ratio']}x",
            "note": f"{r['per_trial_ms']:.0f} ms per trial through the sweep runner"}


def _memory(r: dict) -> dict[str, Any]:
    return {"measured": f"{r['idle_mb']:.0f} MB idle", "note": f"peak under load {r['load_peak_mb']:.0f} MB"}


def _scale(r: dict) -> dict[str, Any]:
    label = {key: label for key, (label, _) in scale.METRICS.items()}
    top = r["rows"][-1]
    trigger = (r.get("goals") or {}).get("trigger_p99_ms") or {}
    return {"measured": f"at N={top['models']:,}: start-up {top['startup_cold_s']:.1f} s "
                        f"(after SIGKILL {top['startup_after_kill_s']:.1f}), RSS {top['rss_idle_mb']:.0f} MB, "
                        f"tick CPU {top['tick_cpu_pct']:.1f} % ({top.get('tick_cpu_state_pct', 0):.1f} % with state), "
                        f"status {top['status_s']:.1f} s, trigger p99 {top.get('trigger_p99_ms', 0):.1f} ms "
                        f"({trigger.get('ratio')}x N={trigger.get('baseline_models')})",
            "note": "; ".join(f"{label[key]} {fit['text']}" for key, fit in r["fits"].items())}


# One summary row per benchmark: its goal (worded from the constants the benchmark checks), and
# what the row says of a result; `holds` is the result's own (none where no goal is set).
def _with_kafka_rows(rows: dict[str, tuple[str, Callable]]) -> dict[str, tuple[str, Callable]]:
    """Each row of a bench that also runs on Apache Kafka, followed by that run's row."""
    out = {}
    for name, (goal, describe) in rows.items():
        out[name] = (goal, describe)
        if name in ON_KAFKA:
            out[f"{name}@kafka"] = (f"{goal}, on Apache Kafka", describe)
    return out


ROWS: dict[str, tuple[str, Callable[[dict], dict[str, Any]]]] = _with_kafka_rows({
    "trigger": (f"trigger latency p99 <= {trigger.GOAL_P99_MS:g} ms and <= {trigger.GOAL_RATIO:g}x bare p99",
                _trigger),
    "launch": (f"data event → training process running p50 <= {launch.GOAL_P50_MS:g} ms", _launch),
    "throughput": (f"metric events >= {throughput.GOAL_PER_SECOND:,}/s and >= {throughput.GOAL_RATIO:g}x bare",
                   _throughput),
    "loop": (f"data event → promoted model answers, minus the step, <= {loop.GOAL_SECONDS:g} s", _loop),
    "drift": ("drift check time (no goal set)", _drift),
    "memory": (f"worker RSS idle <= {memory.GOAL_IDLE_MB:g} MB", _memory),
    "scale": ("at 10,000 models: start-up <= 15 s (also after SIGKILL), RSS idle <= 1 GB, tick CPU <= 5 %, "
              "status <= 2 s, trigger p99 <= 1.5x the smallest N's (verdict only for runs that reach 10,000)",
              _scale),
    "serving": (f"one-row predictions >= {serving.GOAL_RPS_RATIO:g}x mlflow models serve's requests/s at "
                f"c={serving.HIGH}, p99 <= {serving.GOAL_P99_C1_MS:g} ms at c=1, routing <= "
                f"{serving.GOAL_ROUTING_P50_MS:g} ms p50", _serving),
    "sweep": ("sweep overhead: trivial trials as processes vs one in-process Study.optimize (no goal set)",
              _sweep),
    "ui": (f"the page with {ui.BENCH.full['events']:,} events drawn in headless Chromium <= {ui.GOAL_MS:g} ms", _ui),
})


def summary(results: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per goal: what it is, what was measured, the bare baseline, the ratio, holds."""
    rows: list[dict[str, Any]] = []
    for name, (goal, describe) in ROWS.items():
        if name not in results:
            continue
        r = results[name]
        row = {"benchmark": name, "goal": goal, "measured": "", "baseline": "", "ratio": "",
               "holds": r.get("holds"), "note": ""}
        row.update({"measured": "failed", "holds": False, "note": r["error"]} if "error" in r else describe(r))
        rows.append(row)
    return rows


def show_summary(rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"loopline benchmarks — {machine['cores']} cores ({machine['cpu']}), load "
                        f"{machine['load'][0]:.2f} at the start, Python {machine['python']}")
    for column in ("goal", "measured", "bare baseline", "ratio", "holds"):
        table.add_column(column, justify="right" if column in ("ratio", "holds") else "left")
    for row in rows:
        holds = {True: "[green]✓[/]", False: "[red]✗[/]", None: "—"}[row["holds"]]
        table.add_row(row["goal"], row["measured"], row["baseline"], row["ratio"], holds)
    console = Console(width=max(Console().width, 130))
    console.print(table)
    for row in rows:
        if row.get("note"):
            console.print(f"  {row['benchmark']}: {row['note']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=common.QUICK_HELP)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    names = [n for n in plan if not args.only or n in args.only.split(",")]
    machine = common.machine()
    started = time.monotonic()
    results: dict[str, dict] = {}
    for name in names:
        print(f"\n=== {name} (load {common.machine()['load'][0]:.2f}) ===", flush=True)
        try:
            results[name] = plan[name]()
            BENCHES[name].report(results[name], name)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    rows = summary(results)
    print()
    show_summary(rows, machine)
    path = common.write_result("summary", {"machine": machine, "machine_after": common.machine(),
                                           "seconds": round(time.monotonic() - started, 1),
                                           "quick": args.quick, "rows": rows})
    print(f"took {time.monotonic() - started:.0f} s; wrote {path}")
    return 1 if any("error" in r for r in results.values()) else 0     # a goal missed is a result


if __name__ == "__main__":
    raise SystemExit(main())
