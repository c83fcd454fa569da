"""The benchmarks' shared runner, and the rule that a figure not measured in the run says so.

Why: every `python -m bench.<name>` goes through `common.Bench`: the sizes it runs with, the
table it prints and the JSON it writes come from there, and `python -m bench` prints its summary
from the same results. No stack is started here: `run` is a stand-in.
"""

from __future__ import annotations

import inspect
import json

import pytest

from bench import __main__ as bench_main
from bench import common, launch


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return tmp_path


def recording_bench(calls: list) -> common.Bench:
    def run(**sizes):
        calls.append(("run", sizes))
        return {"benchmark": "fake", **sizes}

    return common.Bench("fake", run, lambda result: calls.append(("show", result)),
                        full={"events": 1000, "rate": 20.0, "bootstrap": None},
                        quick={"events": 40, "settle": 1.0}, doc="fake benchmark")


def test_without_flags_it_runs_the_full_sizes_shows_and_writes_the_json(results, capsys):
    calls: list = []
    assert recording_bench(calls).main([]) == 0
    full = {"events": 1000, "rate": 20.0, "bootstrap": None}
    assert calls == [("run", full), ("show", {"benchmark": "fake", **full})]
    written = sorted(p.name for p in results.iterdir())
    assert len(written) == 2 and "fake-latest.json" in written
    assert json.loads((results / "fake-latest.json").read_text()) == {"benchmark": "fake", **full}
    stamped = next(name for name in written if name != "fake-latest.json")
    assert f"wrote {results / stamped}" in capsys.readouterr().out


def test_quick_changes_only_its_sizes_and_a_flag_overrides_both(results):
    calls: list = []
    recording_bench(calls).main(["--quick", "--rate", "5", "--bootstrap", "broker:9092"])
    assert calls[0] == ("run", {"events": 40, "rate": 5.0, "bootstrap": "broker:9092", "settle": 1.0})
    assert isinstance(calls[0][1]["rate"], float)   # the flag's type is its default's


def test_a_bad_flag_value_is_refused_before_anything_runs(results, capsys):
    calls: list = []
    with pytest.raises(SystemExit) as exit_:
        recording_bench(calls).main(["--events", "many"])
    assert exit_.value.code == 2 and "--events: invalid int value: 'many'" in capsys.readouterr().err
    assert calls == [] and not any(results.iterdir())


def test_every_size_of_every_benchmark_is_a_keyword_of_its_run():
    """A misspelt size would otherwise surface only when `make bench` reaches that benchmark."""
    assert list(bench_main.BENCHES) == ["trigger", "launch", "throughput", "loop", "drift", "memory",
                                        "serving", "ui", "sweep", "scale", "trigger@kafka", "throughput@kafka"]
    for name, bench in bench_main.BENCHES.items():
        assert bench.name == name.partition("@")[0]
        for plan in (bench_main.FULL, bench_main.QUICK):
            inspect.signature(bench.run).bind(**plan[name].keywords)     # TypeError names the size
    assert bench_main.FULL["trigger@kafka"].keywords["broker"] == "kafka"
    assert bench_main.FULL["trigger"].keywords["broker"] == "embedded"
    assert list(bench_main.ROWS)[:2] == ["trigger", "trigger@kafka"]       # each beside its Kafka run


def test_the_dagster_figure_is_printed_as_quoted_with_its_source():
    result = {"launch": {"p50_ms": 43.0, "p99_ms": 144.0}, "bare_interpreter": {"p50_ms": 15.0},
              "ratio_p50": 2.88, "holds": True,
              "quoted": {"dagster_sensor_subprocess_p50_ms": 3850.0, "source": launch.DAGSTER_SOURCE}}
    [row] = bench_main.summary({"launch": result})
    assert row["note"] == (f"Dagster sensor + subprocess: quoted: 3.85 s (source: {launch.DAGSTER_SOURCE})")
    assert row["measured"] == "p50 43 ms (p99 144)" and row["holds"] is True
    assert "Dagster" not in row["measured"] + row["baseline"]      # never beside what was measured


def test_a_failed_benchmark_keeps_its_row_with_the_error():
    [row] = bench_main.summary({"memory": {"error": "RuntimeError: boom"}})
    assert row == {"benchmark": "memory", "goal": "worker RSS idle <= 400 MB", "measured": "failed",
                   "baseline": "", "ratio": "", "holds": False, "note": "RuntimeError: boom"}
