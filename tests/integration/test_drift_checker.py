"""The Evidently drift checker on a real MLflow store: reference recorded by the job SDK, cached
per version, no drift on the training distribution, drift and an HTML report on a shifted batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from agents.policies import DriftPolicy
from agents.ports import DriftRequest, NoReference
from examples.classifier.data import FEATURES, batch, write_batch
from stepkit import reference
from adapters.drift import METHODS, EvidentlyDrift, MlflowReferences
from stepkit.job import context

MODEL = "clf"
POLICY = DriftPolicy(num_method="wasserstein", num_threshold=0.1, drift_share=0.1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registered v1 of MODEL whose training run recorded batches 0-1 as its reference."""
    root = tmp_path_factory.mktemp("drift-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    env = {"LOOPLINE_STEP": "train", "LOOPLINE_RUN_NAME": "run-1", "LOOPLINE_MODEL": MODEL,
           "LOOPLINE_OUTPUTS": str(root / "outputs.json"), "LOOPLINE_IDEMPOTENCY_KEY": "key-1",
           "LOOPLINE_STATE_DIR": str(root), "LOOPLINE_ARTIFACT_ROOT": (root / "artifacts").as_uri(),
           "LOOPLINE_REQUEST": json.dumps({"data_versions": ["batch-00000", "batch-00001"]})}
    ctx = context(env)
    training = batch(0, rows=2000).drop(columns=["label"])
    with ctx.start_run() as run:
        meta = ctx.log_reference(training.assign(prediction=(training["f0"] > 0).astype(int)),
                                 max_rows=1500)
        ctx._register(f"runs:/{run.info.run_id}/model", None, run.info.run_id)
    yield {"uri": uri, "root": root, "meta": meta, "run_id": run.info.run_id}
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)   # set_tracking_uri exports it to later processes


def checker(store) -> EvidentlyDrift:
    references = MlflowReferences(store["uri"])
    return EvidentlyDrift(references, references.log_report, store["root"] / "reports")


def request(store, index: int, rows: int = 1000, **kw) -> DriftRequest:
    info = write_batch(index, store["root"] / "data", rows=rows)
    return DriftRequest(MODEL, "1", "data", info["version"], kw.pop("policy", POLICY),
                        uri=info["uri"], **kw)


def test_reference_is_recorded_bounded_and_tagged(store):
    meta = store["meta"]
    assert meta["rows_total"] == 2000 and meta["rows_sampled"] == 1500
    assert meta["dataset_versions"] == ["batch-00000", "batch-00001"]
    assert meta["digest"].startswith("sha256:") and set(meta["profile"]) == {*FEATURES, "prediction"}
    client = mlflow.MlflowClient(store["uri"])
    version = client.get_model_version(MODEL, "1")
    assert client.get_run(version.run_id).data.tags[reference.TAG_DIGEST] == meta["digest"]


def test_training_distribution_no_drift_shifted_batch_drift_with_report(store):
    drift = checker(store)
    clean = drift.check(request(store, 2))              # concept A, like the reference: fixed seed
    assert not clean.drifted and clean.report_uri is None
    assert set(clean.columns) == set(FEATURES)          # label is not in the reference
    assert all(not c["drifted"] and c["method"] == "Wasserstein distance (normed)"
               for c in clean.columns.values())
    assert clean.reference_version == "batch-00000,batch-00001"

    shifted = drift.check(request(store, 4))            # f5 mean +1.5 from batch 4 on
    assert shifted.drifted and shifted.drift_share == pytest.approx(1 / 6)
    assert shifted.columns["f5"]["drifted"] and shifted.columns["f5"]["score"] > 1.0
    assert not shifted.columns["f0"]["drifted"]
    assert shifted.reference_cached and drift.loads == 1        # downloaded once per version

    # The report is an artifact of the version's run: download it through MLflow.
    assert shifted.report_uri == f"runs:/{store['run_id']}/drift/data-batch-00004.html"
    local = mlflow.artifacts.download_artifacts(artifact_uri=shifted.report_uri,
                                                tracking_uri=store["uri"])
    html = Path(local).read_text()
    for header in ("Column", "Type", "Reference Distribution", "Current Distribution",
                   "Data Drift", "Stat Test", "Drift Score"):      # the per-column drift table
        assert f'"title": "{header}"' in html
    assert "Drift is detected for 16.667% of columns (1 out of 6)" in html
    assert all(f'"{column}"' in html for column in FEATURES)


def test_prediction_log_rows_are_compared_with_predictions_too(store):
    rows = batch(3, rows=800).drop(columns=["label"])
    rows = rows.assign(prediction=1)                        # a model that always says 1
    result = checker(store).check(DriftRequest(
        MODEL, "1", "predictions", "predictions:a..b", POLICY,
        rows=tuple(rows.to_dict(orient="records")), report=False))
    assert set(result.columns) == {*FEATURES, "prediction"}
    assert result.columns["prediction"]["drifted"] and result.drifted and result.report_uri is None


def test_a_version_without_reference_is_a_clear_no_reference(store):
    with pytest.raises(NoReference, match="not in the registry"):
        checker(store).check(DriftRequest(MODEL, "99", "data", "x", POLICY,
                                          uri="file:///nowhere.parquet"))


def test_known_methods_are_evidentlys():
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    assert METHODS <= set(_registered_stat_tests)
