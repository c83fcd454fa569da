"""Drift and online-metric triggers end to end: real broker, worker, serving, pipelines, MLflow.

One stack, one story (each stack start and each training costs seconds, so the checks share it):

1. v1 is trained on batches 0-1 (concept A) and records its reference data.
2. A batch from the training distribution publishes no drift; a shifted batch (f5 +1.5) does,
   and the trigger requests a training with reason drift, caused by the drift event.
3. 19 more drift events while that training runs: still exactly one request, 19 suppressed
   (visible on the worker's /loopline/monitoring page).
4. The drift report is an MLflow artifact of the champion's run, with the per-column table.
5. Feedback through the serving endpoint: a bad window of v2 (no online score for v1) asks for a
   training with reason metric; v3 is deployed; a bad window of v3 right after its deployment,
   with v2 having scored better, asks for a rollback instead, and the deployer moves the champion
   back to v2.
6. The serving prediction log is drift-checked too.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from examples.classifier.data import batch, write_batch
from devstack.stack import LocalStack
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MODEL = "clf"


def write_config(path: Path) -> Path:
    steps = [
        {"name": "prepare", "command": ["python", "-m", "examples.classifier.prepare"]},
        {"name": "train", "command": ["python", "-m", "examples.classifier.train", "--epochs", "5"],
         "depends": ["prepare"]},
        {"name": "evaluate", "command": ["python", "-m", "examples.classifier.evaluate"],
         "depends": ["train"]},
    ]
    path.write_text(yaml.safe_dump({"models": [{
        "name": MODEL,
        "pipeline": {"launcher": "local", "workdir": str(REPO), "steps": steps},
        "retrain": {"min_new_rows": 2000, "window_batches": 3, "cooldown_seconds": 0},
        "gate": {"metric": "accuracy", "min_value": 0.0, "min_improvement": -1.0},  # always promote
        "drift": {"num_method": "wasserstein", "num_threshold": 0.2, "drift_share": 0.1,
                  "prediction_rows": 2000},
        "metrics": {"metric": "accuracy", "floor": 0.8, "window_seconds": 2, "min_count": 20,
                    "rollback_guard_seconds": 600, "grace_seconds": 1},
    }]}))
    return path


def data_event(index: int, directory: Path, rows: int):
    info = write_batch(index, directory, rows=rows)
    return build(ev.DataArrived(uri=info["uri"], rows=info["rows"], version=info["version"],
                                digest=info["digest"]), MODEL, source="tests/data")


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def wait_serving(stack: LocalStack, version: str, rows: list[dict], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.serving.check()
        try:
            if get(stack.serve_port, "/models").get(MODEL, {}).get("version") == version:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"serving never answered with v{version}")


def predict_and_label(stack: LocalStack, rows: list[dict], right: bool) -> str:
    """Predict `rows`, then send back labels that are all right (or all wrong); returns the version."""
    answer = post(stack.serve_port, f"/models/{MODEL}/predict", {"rows": rows})
    feedback = [{"prediction_id": pid, "label": p if right else 1 - p}
                for pid, p in zip(answer["prediction_ids"], answer["predictions"])]
    assert post(stack.serve_port, f"/models/{MODEL}/feedback", {"feedback": feedback}) == {
        "accepted": len(rows)}
    return answer["version"]


def test_drift_and_metric_triggers_end_to_end(tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml")
    data = tmp_path / "data"
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    serving=True) as stack, Publisher(stack.bootstrap, stack.settings.topics) as bus:
        observer = stack.observer

        def of(event_type):
            return observer.of_type(event_type, MODEL)

        def wait(predicate, timeout, what):
            return observer.wait_for(lambda o: predicate(), timeout, what)

        def deployed(version: str, kind=ev.DeploymentDone.TYPE, timeout: float = 240):
            return wait(lambda: [d for d in of(kind) if d.data.version == version], timeout,
                        f"{kind} of v{version}")[0]

        # 1. v1 from batches 0-1 (2000 new rows)
        for index in (0, 1):
            bus.publish(data_event(index, data, 1000))
        deployed("1")

        # 2. same distribution: no drift; shifted: drift -> training requested, reason drift
        clean, shifted = data_event(2, data, 1000), data_event(4, data, 500)   # 1500 < 2000 rows
        bus.publish(clean)
        bus.publish(shifted)
        drift = wait(lambda: of(ev.DriftDetected.TYPE), 60, "drift detected")[0]
        assert drift.data.dataset_version == "batch-00004" and drift.event.causationid == shifted.id
        assert [d.data.dataset_version for d in of(ev.DriftDetected.TYPE)] == ["batch-00004"]
        assert drift.data.model_version == "1" and drift.data.origin == "data"
        assert drift.data.reference_version == "batch-00000,batch-00001"
        assert drift.data.columns["f5"]["drifted"] and not drift.data.columns["f0"]["drifted"]
        assert drift.data.columns["f5"]["method"] == "Wasserstein distance (normed)"
        request = wait(lambda: [r for r in of(ev.TrainingRequested.TYPE) if r.data.reason == "drift"],
                       30, "a drift-caused training request")[0]
        assert request.event.causationid == drift.event.id
        assert request.data.data_versions == ["batch-00001", "batch-00002", "batch-00004"]

        # 3. a burst of 19 more drift events while that training runs: coalesced
        burst = [build(ev.DriftDetected(dataset_version="batch-00004", reference_version="x",
                                        drift_share=0.5), MODEL, source="tests/burst")
                 for _ in range(19)]
        for event in burst:
            bus.send(event)
        bus.flush()
        deployed("2")
        web = int(stack.worker.env["LOOPLINE_WEB_PORT"])
        status = wait(lambda: (s := get(web, "/loopline/monitoring")[MODEL])["retrain"]["suppressed"] >= 19
                      and s, 30, "19 suppressed drift signals")
        assert status["retrain"]["suppressed"] == 19
        assert {f"tests/burst#{e.id}" for e in burst} <= set(status["retrain"]["suppressed_keys"])
        assert status["drift"]["clean"] == 1 and status["drift"]["drifted"] == 1
        # The trigger has handled the drift training's end once it is no longer in flight; a
        # follow-up would be in flight (and requested) by then.
        retrain = wait(lambda: (r := get(web, "/loopline/monitoring")[MODEL]["retrain"])["in_flight"]
                       != request.data.idempotency_key and r, 30, "the end of the drift training")
        assert retrain["in_flight"] is None and retrain["pending"] == []
        assert [r.data.reason for r in of(ev.TrainingRequested.TYPE)] == ["data", "drift"]

        # 4. the drift report: an artifact of v1's run, with the per-column drift table
        client = mlflow.MlflowClient(stack.settings.tracking_uri, stack.settings.tracking_uri)
        run_id = client.get_model_version(MODEL, "1").run_id
        assert drift.data.report_uri == f"runs:/{run_id}/drift/data-batch-00004.html"
        html = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=drift.data.report_uri, tracking_uri=stack.settings.tracking_uri)).read_text()
        assert '"title": "Stat Test"' in html and '"title": "Drift Score"' in html and '"f5"' in html

        # 5a. v2 scores well, then badly: v1 has no online score -> retrain, reason metric
        rows = batch(5, rows=30).drop(columns=["label"]).to_dict(orient="records")
        wait_serving(stack, "2", rows)
        assert predict_and_label(stack, rows, right=True) == "2"
        wait(lambda: [m for m in of(ev.MetricReported.TYPE) if m.data.value == 1.0], 30, "a good window")
        predict_and_label(stack, rows, right=False)
        bad = wait(lambda: [m for m in of(ev.MetricReported.TYPE) if m.data.value == 0.0], 30,
                   "a bad window")[0]
        assert (bad.data.metric, bad.data.count, bad.data.model_version) == ("accuracy", 30, "2")
        assert bad.data.window_end - bad.data.window_start == 2
        metric_request = wait(lambda: [r for r in of(ev.TrainingRequested.TYPE)
                                       if r.data.reason == "metric"], 30, "a metric-caused request")[0]
        assert metric_request.event.causationid == bad.event.id
        assert not of(ev.RollbackRequested.TYPE)

        # 5b. v3 is deployed and scores badly at once; v2 scored 0.5 -> roll back to v2
        deployed("3")
        wait_serving(stack, "3", rows)
        assert predict_and_label(stack, rows, right=False) == "3"
        rollback = wait(lambda: of(ev.RollbackRequested.TYPE), 30, "a rollback request")[0]
        assert (rollback.data.version, rollback.data.from_version) == ("2", "3")
        rolled = deployed("2", ev.DeploymentRolledBack.TYPE, 30)
        assert rolled.data.from_version == "3" and rolled.event.causationid == rollback.event.id
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
        assert [r.data.reason for r in of(ev.TrainingRequested.TYPE)] == ["data", "drift", "metric"]
        # the guard learns of the rollback from the deployment topic, a moment after the registry
        guard = wait(lambda: (g := get(web, "/loopline/monitoring")[MODEL]["metric_guard"])["champion"] == "2"
                     and g, 30, "the guard to see the rollback")
        assert guard["rollback_requested"] is None

        # 6. the prediction log: 2000 rows far from v2's reference (f0 +3) -> drift, origin predictions
        wait_serving(stack, "2", rows)
        shifted_rows = batch(6, rows=2000).drop(columns=["label"]).assign(f0=lambda f: f.f0 + 3)
        post(stack.serve_port, f"/models/{MODEL}/predict", {"rows": shifted_rows.to_dict(orient="records")})
        logged = wait(lambda: [d for d in of(ev.DriftDetected.TYPE) if d.data.origin == "predictions"],
                      60, "drift in the prediction log")[0]
        assert logged.data.model_version == "2" and logged.data.columns["f0"]["drifted"]
        assert logged.data.rows >= 2000 and logged.data.report_uri.startswith("runs:/")
        assert not observer.dead_letters, [d.reason for d in observer.dead_letters]
