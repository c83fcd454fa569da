"""The growth bench (`python -m bench.scale`) runs on two small counts and reports well-formed
numbers (not timed: the curves are `python -m bench.scale`'s business on a quiet machine)."""

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


def test_scale_benchmark(capsys):
    result = scale.run(counts="5,20", idle_seconds=1.0, cpu_seconds=2.0)
    json.dumps(result)
    assert [row["models"] for row in result["rows"]] == [5, 20]
    for row in result["rows"]:
        for key in scale.METRICS:
            value = row[key]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    for key, fit in result["fits"].items():
        assert fit["model"] in ("constant", "log", "linear"), (key, fit)
        assert f"({fit['model']})" in fit["text"]
    assert result["lineage_probe"]["returncode"] != 0      # no version to show: reported as not measured
    capsys.readouterr()
    scale.show(result)
    table = capsys.readouterr().out
    assert "N=5" in table and "N=20" in table and "start-up after SIGKILL" in table
    assert all(f"({fit['model']})" in table for fit in result["fits"].values())
