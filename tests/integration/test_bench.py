"""Every benchmark runs on a small size and reports well-formed numbers (not timed: the goals are
`make bench`'s business, on a quiet machine, not the test suite's)."""

from __future__ import annotations

import json
import math

import pytest

from bench import __main__ as bench_main
from bench import common, launch, loop, memory, serving, throughput, trigger, ui

pytestmark = pytest.mark.slow


def finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values)


def well_formed_latency(row: dict, n: int | None = None) -> None:
    assert set(row) == {"n", "p50_ms", "p99_ms", "max_ms", "mean_ms"}
    assert finite(row["p50_ms"], row["p99_ms"], row["max_ms"], row["mean_ms"])
    assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    if n is not None:
        assert row["n"] == n


def test_quantiles_and_summaries():
    values = [i / 1000 for i in range(1, 1001)]                 # 1 ms .. 1000 ms
    row = common.summary_ms(values)
    assert (row["n"], row["p50_ms"], row["p99_ms"], row["max_ms"]) == (1000, 500.0, 990.0, 1000.0)
    assert math.isnan(common.summary_ms([])["p50_ms"])
    assert common.ratio(6.0, 3.0) == 2.0 and common.ratio(1.0, 0.0) is None


def test_trigger_benchmark():
    result = bench_main.QUICK["trigger"]()
    json.dumps(result)
    sent = result["sent"]               # a tick with every model still training sends nothing
    assert 20 <= sent <= 40 and result["requests"] == sent and result["missing"] == 0
    well_formed_latency(result["trigger"], sent)
    well_formed_latency(result["received"], sent)
    well_formed_latency(result["probe"], sent)
    assert result["trigger"]["p50_ms"] <= result["received"]["p50_ms"]     # one hop < two hops
    assert result["launched"] >= sent - 5 and finite(result["ratio_p99"], result["worker_rss_mb"])
    assert result["holds"] == (result["trigger"]["p99_ms"] <= trigger.GOAL_P99_MS
                               and result["ratio_p99"] <= trigger.GOAL_RATIO)   # the verdict follows the numbers


def test_launch_benchmark():
    result = bench_main.QUICK["launch"]()
    json.dumps(result)
    stages = result["stages"]
    for name in ("request", "submitted", "runner", "step"):
        well_formed_latency(stages[name], 3)
    assert stages["request"]["p50_ms"] <= stages["submitted"]["p50_ms"] <= stages["step"]["p50_ms"]
    well_formed_latency(result["bare_interpreter"], 3)
    assert result["launch"] == stages["step"]
    assert result["holds"] == (stages["step"]["p50_ms"] <= launch.GOAL_P50_MS)
    assert "dagster_p50_ms" not in result and result["quoted"]["source"]    # quoted, never as measured


def test_throughput_benchmark():
    result = bench_main.QUICK["throughput"]()
    json.dumps(result)
    assert result["bare"]["records"] == 20_000 and result["bare"]["per_second"] > 0
    ours = result["loopline"]
    assert ours["counted"] == ours["counted_in_windows"] == 20_000        # nothing lost
    assert ours["windows_reported"] >= 4 and ours["per_second"] > 0
    assert finite(result["ratio"], ours["worker_rss_max_mb"])
    assert result["holds"] == (ours["per_second"] >= throughput.GOAL_PER_SECOND
                               and result["ratio"] >= throughput.GOAL_RATIO)


def test_loop_benchmark():
    result = bench_main.QUICK["loop"]()
    json.dumps(result)
    assert [r["version"] for r in result["runs"]] == ["1", "2"]
    for row in result["runs"]:
        assert finite(row["total_s"], row["step_s"]) and row["step_s"] < row["total_s"]
        assert row["overhead_s"] == pytest.approx(row["total_s"] - row["step_s"], abs=0.002)
        # stages may overlap a little (the step can start before the trainer's event is built)
        assert all(math.isfinite(v) and v > -0.5 for v in row["stages_s"].values())
        assert sum(row["stages_s"].values()) == pytest.approx(row["total_s"], abs=0.01)
    assert result["overhead_s"] == result["runs"][1]["overhead_s"]
    assert result["holds"] == (result["overhead_s"] <= loop.GOAL_SECONDS)


def test_memory_benchmark():
    result = bench_main.QUICK["memory"]()
    json.dumps(result)
    assert 50 < result["idle_mb"] <= result["load_peak_mb"]
    assert any("drift" in name for name in result["children_idle_mb"])      # the Evidently pool
    assert result["holds"] == (result["idle_mb"] <= memory.GOAL_IDLE_MB)


def test_serving_benchmark(capsys):
    result = bench_main.QUICK["serving"]()
    json.dumps(result)
    runs = {(r["server"], r["concurrency"], r["route"]): r for r in result["runs"]}
    assert list(runs) == [("mlflow", 32, "direct"), ("loopline", 32, "direct"), ("mlflow", 1, "direct"),
                          ("loopline", 1, "direct"), ("loopline", 1, "bandit")]
    for (_, concurrency, _), row in runs.items():
        counted = result["requests"] if concurrency == serving.HIGH else result["requests_c1"]
        well_formed_latency({k: row[k] for k in ("n", "p50_ms", "p99_ms", "max_ms", "mean_ms")}, counted)
        assert row["errors"] == 0 and finite(row["per_second"], row["client_cpu"]) and row["per_second"] > 0
    # The bandit's answers all carried its experiment; the direct ones none.
    assert runs[("loopline", 1, "bandit")]["routed"] == 1.0 and runs[("loopline", 1, "direct")]["routed"] == 0.0
    assert set(result["ratios"]) == {"rps_c32", "p50_c32", "p99_c32", "rps_c1", "p50_c1", "p99_c1"}
    assert all(finite(value) and value > 0 for value in result["ratios"].values())
    assert result["ratios"]["rps_c32"] == pytest.approx(
        runs[("loopline", 32, "direct")]["per_second"] / runs[("mlflow", 32, "direct")]["per_second"], rel=1e-2)
    routing = result["routing"]
    assert routing["overhead_p50_ms"] == pytest.approx(
        runs[("loopline", 1, "bandit")]["p50_ms"] - runs[("loopline", 1, "direct")]["p50_ms"], abs=1e-3)
    assert result["goals_met"] == {   # the verdicts follow the numbers
        "rps_ratio_c32": result["ratios"]["rps_c32"] >= serving.GOAL_RPS_RATIO,
        "p99_c1": runs[("loopline", 1, "direct")]["p99_ms"] <= serving.GOAL_P99_C1_MS,
        "routing_p50": routing["overhead_p50_ms"] <= serving.GOAL_ROUTING_P50_MS}
    capsys.readouterr()
    serving.show(result)
    table = capsys.readouterr().out
    assert table.count("│ loopline") == 3 and table.count("│ mlflow") == 2
    assert table.count("goal: ") == 3 and ("not measured" not in table)
    (row,) = bench_main.summary({"serving": result})
    assert row["ratio"] == f"{result['ratios']['rps_c32']}x" and row["holds"] == result["holds"]


def test_the_summary_has_one_row_per_goal_and_survives_a_failed_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    plan = {name: (lambda: (_ for _ in ()).throw(RuntimeError("boom"))) for name in bench_main.QUICK}
    monkeypatch.setattr(bench_main, "QUICK", plan)
    assert bench_main.main(["--quick", "--only", "launch,memory"]) == 1
    summary = json.loads((tmp_path / "summary-latest.json").read_text())
    assert [r["benchmark"] for r in summary["rows"]] == ["launch", "memory"]
    assert all(r["measured"] == "failed" and "boom" in r["note"] for r in summary["rows"])


def test_ui_benchmark():
    """The page with a few hundred events in headless Chromium: every mark drawn, the timings sane."""
    from tests.browser.conftest import chromium_missing
    from tests.conftest import require

    require(chromium_missing(), "Chromium and Playwright for the ui benchmark")
    result = bench_main.QUICK["ui"]()
    json.dumps(result)
    assert result["events"] == result["marks"] == 500 and len(result["loads_ms"]) == 2
    assert finite(result["median_ms"], result["api_response_end_median_ms"], *result["loads_ms"])
    assert result["dom_nodes"] < 300 and result["console_errors"] == []     # marks are paths, not nodes
    assert result["holds"] == (result["median_ms"] <= ui.GOAL_MS)


def test_sweep_benchmark():
    result = bench_main.QUICK["sweep"]()
    json.dumps(result)
    assert (result["trials"], result["parallelism"]) == (4, 2)
    assert result["sweep"]["trials"] == {"complete": 4, "pruned": 0, "failed": 0}
    assert result["loop"]["complete"] == 4
    assert finite(result["sweep"]["seconds"], result["loop"]["seconds"], result["ratio"])
    assert result["ratio"] == common.ratio(result["sweep"]["seconds"], result["loop"]["seconds"])
