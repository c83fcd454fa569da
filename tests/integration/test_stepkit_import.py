"""Importing the step SDK pulls in no bus, drift or tracking library.

A training step imports `stepkit.job` first thing; it must stay light enough for any step image,
so MLflow and pandas load only when a step logs. Checked in a fresh interpreter, because this
process has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("faust", "kafka", "aiokafka", "confluent_kafka", "evidently", "mlflow", "pandas")


def heavy_modules_after(statement: str) -> set[str]:
    """The HEAVY packages a fresh interpreter has loaded once it ran `statement`."""
    code = (f"import json, sys\n{statement}\n"
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout)) & set(HEAVY)


def test_importing_job_imports_no_bus_drift_or_tracking_library():
    assert heavy_modules_after("import stepkit.job") == set()


def test_the_probe_sees_a_heavy_import():
    assert heavy_modules_after("import stepkit.job, pandas") == {"pandas"}
