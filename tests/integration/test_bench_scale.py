"""The growth bench (`python -m bench.scale`) runs every part at a tiny size and reports well-formed
numbers (not timed: the curves are `python -m bench.scale`'s business on a quiet machine). One
count only, to stay short: the fit over several counts is tested on numbers, above."""

from __future__ import annotations

import json
import math

import pytest

from bench import scale

pytestmark = pytest.mark.slow


def test_fit_tells_the_three_growths_apart():
    counts = [10, 100, 1000, 10000]
    assert scale.fit(counts, [2.0, 2.1, 1.95, 2.05])["model"] == "constant"
    assert scale.fit(counts, [1.0 + 0.5 * math.log(n) for n in counts])["model"] == "log"
    linear = scale.fit(counts, [3.0 + 0.002 * n for n in counts])
    assert linear["model"] == "linear" and linear["b"] == pytest.approx(0.002)
    assert linear["a"] == pytest.approx(3.0)
    assert "(linear)" in scale.describe_fit(linear, "s") and "ms × N" in scale.describe_fit(linear, "s")
    assert scale.fit([5, 20], [1.0, 3.0])["undetermined"]


def test_goals_are_checked_at_the_largest_count():
    rows = [{"models": 10, "trigger_p99_ms": 10.0, "tick_cpu_pct": 3.0, "status_s": 1.0},
            {"models": 10000, "trigger_p99_ms": 20.0, "tick_cpu_pct": 4.0, "status_s": 3.0}]
    goals = scale.goals(rows)
    assert goals["at_models"] == 10000
    assert goals["trigger_p99_ms"]["ratio"] == 2.0 and goals["trigger_p99_ms"]["holds"] is False
    assert goals["tick_cpu_pct"]["holds"] is True and goals["status_s"]["holds"] is False
    assert goals["rss_idle_mb"]["holds"] is None                 # not measured: no verdict


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_scale_benchmark(capsys):
    # The partition sweep reuses the main row (another stack would cost ~20 s here); its own
    # stacks are measure(full=False), a subset of the main row's steps.
    result = scale.run(counts="10", idle_seconds=0.5, cpu_seconds=1.0, trigger_seconds=2.0,
                       sweep_models=10, sweep_partitions="4", feedback_events=3000)
    json.dumps(result)
    assert [row["models"] for row in result["rows"]] == [10]
    for row in result["rows"]:
        for key in scale.METRICS:
            assert _positive(row[key]), (key, row[key])
        spread = row["trigger"]
        assert spread["events"] == 100 and spread["requests"] == spread["crossing"] > 0, spread
        assert spread["missing"] == 0 and spread["probe"]["n"] == spread["crossing"]
    for key, fit in result["fits"].items():
        assert fit["model"] == "constant" and "(constant)" in fit["text"], (key, fit)   # one point
    assert result["goals"]["at_models"] == 10 and set(scale.GOALS) <= set(result["goals"])
    assert result["holds"] is None                          # the goals are for 10,000 models
    assert result["lineage_probe"]["returncode"] != 0      # no version to show: reported as not measured
    sweep = result["sweep"]["rows"]
    assert [(r["partitions"], r["models"]) for r in sweep] == [(4, 10)] and sweep[0]["from_main_row"]
    for row in sweep:
        for key in scale.SWEEP_METRICS:
            assert _positive(row[key]), (row["partitions"], key, row[key])
    feedback = result["feedback"]
    for key, workers in (("one", 1), ("two", 2)):
        got = feedback[key]
        assert got["workers"] == workers and got["counted"] >= 3000 and len(got["per_worker"]) == workers
        assert sum(got["per_worker"]) == got["counted"] and all(n > 0 for n in got["per_worker"]), got
        assert _positive(got["per_second"]) and 0 < got["machine_busy_pct"] <= 100 * feedback["cores"] + 1
    assert _positive(feedback["speed_up"])
    capsys.readouterr()
    scale.show(result)
    table = capsys.readouterr().out
    assert "N=10" in table and "start-up after SIGKILL" in table and "(constant)" in table
    assert "trigger p99, spread load" in table and "P=4 (main row)" in table and "two workers / one" in table
