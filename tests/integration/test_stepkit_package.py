"""The step SDK ships on its own: `pip install ./stepkit` alone, imported with nothing else installed.

A training image installs `stepkit` without Faust, Kafka clients, Evidently or the rest of
loopline; this builds and installs the package from `stepkit/pyproject.toml` into an empty
folder and imports it with `python -S` (no site-packages: only the standard library and that
folder), the way such an image would see it before its step logs anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import stepkit.job, stepkit.reference
try:
    stepkit.job.context()
    error = None
except stepkit.job.JobContextError as exc:
    error = str(exc)
print(json.dumps({"file": stepkit.job.__file__, "error": error,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_the_step_sdk_installs_alone_and_imports_with_the_standard_library_only(tmp_path):
    source, target = tmp_path / "stepkit", tmp_path / "site"      # a build writes beside its source
    shutil.copytree(REPO / "stepkit", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, cwd=tmp_path)
    assert not (target / "streams").exists() and not (target / "loopline").exists()

    out = subprocess.run([sys.executable, "-S", "-c", PROBE, str(target)], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)

    assert seen["file"].startswith(str(target))            # the installed copy, not the repo's
    assert "LOOPLINE_" in (seen["error"] or "")             # outside a step: says what is missing
    ours_or_heavy = {"faust", "kafka", "aiokafka", "confluent_kafka", "evidently", "mlflow", "pandas",
                     "streams", "agents", "triggers", "loopline", "adapters", "serving"}
    assert ours_or_heavy.isdisjoint(seen["modules"]), ours_or_heavy & set(seen["modules"])
    assert set(seen["modules"]) - {"stepkit"} <= set(sys.stdlib_module_names) | {"__main__"}
