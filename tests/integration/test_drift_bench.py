"""The drift benchmark runs on a small size and reports well-formed numbers."""

from __future__ import annotations

import json
import math

from bench import drift


def test_drift_benchmark_numbers_are_well_formed():
    result = drift.run(size=3000, columns=4, repeats=1)
    json.dumps(result)                                      # what `main` writes must be JSON
    assert (result["size"], result["columns"], result["repeats"]) == (3000, 4, 1)
    assert result["reference_rows"] == 3000 and result["reference_loads"] == 1
    assert set(result["results"]) == {"evidently_alone_clean", "evidently_alone_drifted",
                                      "monitor_clean", "monitor_drifted"}
    for row in result["results"].values():
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0 and len(row["runs_s"]) == 1
    assert not result["results"]["monitor_clean"]["drifted"]
    assert result["results"]["monitor_drifted"]["drifted"] and result["results"]["monitor_drifted"]["report"]
    assert result["results"]["monitor_drifted"]["reference_cached"]
    assert result["same_verdict"]
    assert set(result["speedup"]) == {"clean", "drifted"} and all(s > 0 for s in result["speedup"].values())
    assert result["monitor_not_slower"] == all(s >= 1 for s in result["speedup"].values())
