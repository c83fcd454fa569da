"""`python -m bench` (`make bench`): every benchmark in turn, one summary table at the end.

    python -m bench [--quick] [--only trigger,launch,throughput,loop,drift,memory]

Each benchmark prints its own table and writes its JSON to bench/results/ (`<name>-latest.json`
and a timestamped copy); the summary (goal, measured, bare baseline, ratio, holds) goes to
bench/results/summary-latest.json with the machine it ran on. `--quick` runs every benchmark on
a small size (what the test suite does): the numbers are then not worth quoting.
A full run takes about five minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
import traceback
from typing import Any, Callable

from bench import common, drift, launch, loop, memory, throughput, trigger

FULL = {
    "trigger": lambda: trigger.run(events=1000, rate=trigger.DEFAULT_RATE, models=100),
    "launch": lambda: launch.run(launches=20),
    "throughput": lambda: throughput.run(events=500_000),
    "loop": lambda: loop.run(loops=4),
    "drift": lambda: drift.run(size=100_000, columns=10, repeats=3),
    "memory": lambda: memory.run(feedback=200_000),
}
QUICK = {
    "trigger": lambda: trigger.run(events=40, rate=20, models=30, settle=1.0),
    "launch": lambda: launch.run(launches=3, settle=1.0),
    "throughput": lambda: throughput.run(events=20_000, models=4),
    "loop": lambda: loop.run(loops=2),
    "drift": lambda: drift.run(size=3000, columns=4, repeats=1),
    "memory": lambda: memory.run(feedback=5000, idle_seconds=2.0),
}
SHOW: dict[str, Callable[[dict], None]] = {
    "trigger": trigger.show, "launch": launch.show, "throughput": throughput.show,
    "loop": loop.show, "drift": drift.show, "memory": memory.show,
}


def summary(results: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per goal: what it is, what was measured, the bare baseline, the ratio, holds."""
    rows: list[dict[str, Any]] = []

    def failed(name: str, goal: str) -> bool:
        if "error" in results.get(name, {"error": "not run"}):
            rows.append({"benchmark": name, "goal": goal, "measured": "failed",
                         "baseline": "", "ratio": "", "holds": False,
                         "note": results.get(name, {}).get("error", "not run")})
            return True
        return False

    if "trigger" in results and not failed("trigger", "trigger latency p99 <= 10 ms and <= 3x bare p99"):
        r = results["trigger"]
        rows.append({"benchmark": "trigger", "goal": "trigger latency p99 <= 10 ms and <= 3x bare p99",
                     "measured": f"p99 {r['trigger']['p99_ms']:.1f} ms (p50 {r['trigger']['p50_ms']:.1f})",
                     "baseline": f"bare send→receive p99 {r['probe']['p99_ms']:.1f} ms",
                     "ratio": f"{r['ratio_p99']}x", "holds": r["holds"],
                     "note": f"{r['requests']} requests at {r['rate']:g}/s, {r['models']} models"})
    if "launch" in results and not failed("launch", "data event → training process running p50 <= 300 ms"):
        r = results["launch"]
        rows.append({"benchmark": "launch", "goal": "data event → training process running p50 <= 300 ms",
                     "measured": f"p50 {r['launch']['p50_ms']:.0f} ms (p99 {r['launch']['p99_ms']:.0f})",
                     "baseline": f"bare python start p50 {r['bare_interpreter']['p50_ms']:.0f} ms",
                     "ratio": f"{r['ratio_p50']}x", "holds": r["holds"],
                     "note": f"Dagster sensor + subprocess: {r['dagster_p50_ms'] / 1000:.2f} s"})
    if "throughput" in results and not failed("throughput", "metric events >= 100,000/s and >= 0.3x bare"):
        r = results["throughput"]
        rows.append({"benchmark": "throughput", "goal": "metric events >= 100,000/s and >= 0.3x bare",
                     "measured": f"{r['loopline']['per_second']:,}/s",
                     "baseline": f"bare aiokafka consume+parse {r['bare']['per_second']:,}/s",
                     "ratio": f"{r['ratio']}x", "holds": r["holds"],
                     "note": f"{r['events']:,} events; all in windows: "
                             f"{r['loopline']['counted_in_windows'] == r['events']}; bare librdkafka "
                             f"{(r.get('bare_librdkafka') or {}).get('per_second') or 0:,}/s"})
    if "loop" in results and not failed("loop", "data event → promoted model answers, minus the step, <= 2 s"):
        r = results["loop"]
        rows.append({"benchmark": "loop", "goal": "data event → promoted model answers, minus the step, <= 2 s",
                     "measured": f"{r['overhead_s']:.2f} s", "baseline": "", "ratio": "",
                     "holds": r["holds"], "note": f"median of warm loops; cold {r['cold_overhead_s']:.2f} s"})
    if "drift" in results and not failed("drift", "drift check (no goal set)"):
        r = results["drift"]
        mon, alone = r["results"]["monitor_clean"], r["results"]["evidently_alone_clean"]
        rows.append({"benchmark": "drift", "goal": "drift check time (no goal set)",
                     "measured": f"{mon['median_s']:.2f} s ({r['size']:,} rows x {r['columns']})",
                     "baseline": f"Evidently alone {alone['median_s']:.2f} s",
                     "ratio": f"{mon['median_s'] / alone['median_s']:.2f}x", "holds": None,
                     "note": f"same verdict: {r['same_verdict']}"})
    if "memory" in results and not failed("memory", "worker RSS idle <= 400 MB"):
        r = results["memory"]
        rows.append({"benchmark": "memory", "goal": "worker RSS idle <= 400 MB",
                     "measured": f"{r['idle_mb']:.0f} MB idle", "baseline": "", "ratio": "",
                     "holds": r["holds"], "note": f"peak under load {r['load_peak_mb']:.0f} MB"})
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
    parser.add_argument("--quick", action="store_true", help="small sizes (numbers not worth quoting)")
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
            SHOW[name](results[name])
            common.write_result(name, results[name])
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
