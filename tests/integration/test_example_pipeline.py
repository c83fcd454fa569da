"""The example pipeline (prepare -> train -> evaluate) as real processes on a real MLflow store.

Why: this is the job side of the loop end to end, exactly as the launcher runs it: each
step a subprocess with the env contract, outputs handed on as LOOPLINE_INPUTS, MLflow on
SQLite in tmp_path. It checks the claims the rest of loopline relies on: versions carry
their lineage tags, a retrain after the concept change beats the champion on the same
holdout, and a relaunch with the same idempotency key registers nothing new.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from examples.classifier import data
from stepkit.job import context

REPO = Path(__file__).resolve().parents[2]
MODEL = "classifier"
STEPS = ("prepare", "train", "evaluate")


@dataclass
class StepResult:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, Any]


@dataclass
class Pipeline:
    """Runs the example's steps the way the local launcher does (argv, no shell, cwd = repo)."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def write_batches(self, indices: range) -> list[dict[str, Any]]:
        return [data.write_batch(i, self.root / "data") for i in indices]

    def request(self, key: str, batches: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": MODEL, "idempotency_key": key, "reason": "test",
                "data_uris": [b["uri"] for b in batches], "data_versions": [b["version"] for b in batches],
                "rows": sum(b["rows"] for b in batches)}

    def env(self, step: str, run_name: str, request: dict[str, Any], inputs: dict[str, Any]) -> dict[str, str]:
        run_dir = self.root / "runs" / run_name
        run_dir.mkdir(parents=True, exist_ok=True)
        outputs = run_dir / f"{step}.{uuid.uuid4().hex[:6]}.json"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "MLFLOW_"))}
        return {**base, "PYTHONPATH": str(REPO), "LOOPLINE_STEP": step, "LOOPLINE_RUN_NAME": run_name,
                "LOOPLINE_RUN_DIR": str(run_dir), "LOOPLINE_OUTPUTS": str(outputs),
                "LOOPLINE_INPUTS": json.dumps(inputs), "LOOPLINE_MODEL": MODEL,
                "LOOPLINE_IDEMPOTENCY_KEY": request["idempotency_key"],
                "LOOPLINE_CORRELATION_ID": f"corr-{run_name}", "LOOPLINE_CAUSATION_ID": f"cause-{run_name}",
                "LOOPLINE_REQUEST": json.dumps(request), "MLFLOW_TRACKING_URI": self.tracking_uri,
                "LOOPLINE_STATE_DIR": str(self.root / "state")}

    def step(self, step: str, run_name: str, request: dict[str, Any],
             inputs: dict[str, Any] | None = None, check: bool = True) -> StepResult:
        env = self.env(step, run_name, request, inputs or {})
        done = subprocess.run([sys.executable, "-m", f"examples.classifier.{step}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"{step} failed:\n{done.stdout}\n{done.stderr}"
        outputs_file = Path(env["LOOPLINE_OUTPUTS"])
        outputs = json.loads(outputs_file.read_text()) if outputs_file.exists() else {}
        return StepResult(done.returncode, done.stdout, done.stderr, outputs)

    def run(self, run_name: str, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
        inputs: dict[str, dict[str, Any]] = {}
        for step in STEPS:
            inputs[step] = self.step(step, run_name, request, inputs).outputs
        return inputs


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    pipeline = Pipeline(tmp_path_factory.mktemp("loopline"))
    with pytest.MonkeyPatch.context() as patch:
        # this process's MLflow calls too: the registry resolves models:/ sources through
        # the global tracking store, which would otherwise be ./mlflow.db in the repo
        patch.setenv("MLFLOW_TRACKING_URI", pipeline.tracking_uri)
        yield pipeline


@pytest.fixture(scope="module")
def mlflow_client(pipeline: Pipeline):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=pipeline.tracking_uri)


@pytest.fixture(scope="module")
def first(pipeline: Pipeline) -> dict[str, Any]:
    """Batches 0-3 (concept A): the first model, no champion yet."""
    request = pipeline.request("key-first", pipeline.write_batches(range(0, 4)))
    return {"request": request, "outputs": pipeline.run("classifier-first", request)}


@pytest.fixture(scope="module")
def second(pipeline: Pipeline, first: dict[str, Any], mlflow_client) -> dict[str, Any]:
    """v1 becomes champion; then batches 4-7 (concept B) train a challenger."""
    mlflow_client.set_registered_model_alias(MODEL, "champion", first["outputs"]["train"]["model_version"])
    request = pipeline.request("key-second", pipeline.write_batches(range(4, 8)))
    return {"request": request, "outputs": pipeline.run("classifier-second", request)}


def test_batches_are_deterministic(tmp_path: Path) -> None:
    a, b = data.write_batch(4, tmp_path / "a"), data.write_batch(4, tmp_path / "b")
    assert a["digest"] == b["digest"] and a["digest"].startswith("sha256:")
    assert a["uri"] == (tmp_path / "a" / "batch-00004.parquet").as_uri()
    assert (a["rows"], a["version"]) == (1000, "batch-00004")
    assert a["schema"] == {**{f"f{i}": "float64" for i in range(6)}, "label": "int64"}
    assert data.write_batch(4, tmp_path / "c", seed=8)["digest"] != a["digest"]


def test_first_run_registers_version_1_with_lineage(first: dict[str, Any], mlflow_client) -> None:
    prepare, train, evaluate = (first["outputs"][s] for s in STEPS)
    assert (prepare["train_rows"], prepare["holdout_rows"]) == (3000, 1000)
    assert train["model_version"] == "1" and train["reused"] is False
    version = mlflow_client.get_model_version(MODEL, "1")
    assert version.run_id == train["run_id"]
    assert version.tags.items() >= {
        "loopline.idempotency_key": "key-first", "loopline.correlation_id": "corr-classifier-first",
        "loopline.run_name": "classifier-first",
        "loopline.data_versions": "batch-00000,batch-00001,batch-00002,batch-00003"}.items()
    run = mlflow_client.get_run(train["run_id"])
    assert run.info.run_name == "classifier-first-train" and run.info.status == "FINISHED"
    assert mlflow_client.get_experiment(run.info.experiment_id).name == MODEL
    assert run.data.tags.items() >= {
        "loopline.idempotency_key": "key-first", "loopline.correlation_id": "corr-classifier-first",
        "loopline.causation_id": "cause-classifier-first", "loopline.run_name": "classifier-first",
        "loopline.step": "train", "loopline.reason": "test", "loopline.model_version": "1",
        "loopline.data_versions": "batch-00000,batch-00001,batch-00002,batch-00003",
        "loopline.eval.champion_version": "", "loopline.eval.holdout_rows": "1000"}.items()
    assert run.data.params["epochs"] == "15" and run.data.params["train_rows"] == "3000"
    assert len(mlflow_client.get_metric_history(train["run_id"], "train_log_loss")) == 15
    assert evaluate["champion_version"] is None and evaluate["champion_metrics"] is None
    assert "champion_error" not in evaluate
    assert evaluate["candidate_metrics"]["accuracy"] > 0.85


def test_artifacts_stay_under_the_state_dir(first: dict[str, Any], pipeline: Pipeline, mlflow_client) -> None:
    run = mlflow_client.get_run(first["outputs"]["train"]["run_id"])
    root = (pipeline.root / "state" / "mlartifacts").as_uri()
    assert mlflow_client.get_experiment(run.info.experiment_id).artifact_location.startswith(root)


def test_retrain_after_the_concept_change_beats_the_champion(second: dict[str, Any], mlflow_client) -> None:
    prepare, train, evaluate = (second["outputs"][s] for s in STEPS)
    assert train["model_version"] == "2"
    assert (evaluate["candidate_version"], evaluate["champion_version"]) == ("2", "1")
    assert evaluate["holdout_rows"] == prepare["holdout_rows"] == 1000
    candidate, champion = evaluate["candidate_metrics"], evaluate["champion_metrics"]
    slices = {"accuracy@segment=neg", "accuracy@segment=pos"}
    assert set(candidate) == set(champion) == {"accuracy", "f1", "roc_auc"} | slices
    assert all(0 <= candidate[k] <= 1 for k in slices) and min(champion[k] for k in slices) < 0.75
    assert 0 < evaluate["candidate_latency_ms_p95"] < 1000
    assert candidate["accuracy"] > 0.85
    assert champion["accuracy"] < 0.7
    assert candidate["accuracy"] > champion["accuracy"] + 0.1
    metrics = mlflow_client.get_run(train["run_id"]).data.metrics
    assert metrics["eval_candidate_accuracy/segment/neg"] == pytest.approx(candidate["accuracy@segment=neg"])
    assert metrics["eval_candidate_latency_ms_p95"] == pytest.approx(evaluate["candidate_latency_ms_p95"])
    assert metrics["eval_candidate_accuracy"] == pytest.approx(candidate["accuracy"])
    assert metrics["eval_champion_accuracy"] == pytest.approx(champion["accuracy"])
    assert mlflow_client.get_model_version(MODEL, "2").tags["loopline.idempotency_key"] == "key-second"


def test_relaunch_with_the_same_key_registers_nothing_new(
    pipeline: Pipeline, second: dict[str, Any], mlflow_client
) -> None:
    before = {v.version for v in mlflow_client.search_model_versions(f"name = '{MODEL}'")}
    rerun = pipeline.step("train", "classifier-second", second["request"],
                          {"prepare": second["outputs"]["prepare"]})
    assert rerun.outputs == {"run_id": second["outputs"]["train"]["run_id"], "model_version": "2", "reused": True}
    assert "reused model version 2" in rerun.stdout
    assert {v.version for v in mlflow_client.search_model_versions(f"name = '{MODEL}'")} == before


def test_a_version_whose_run_crashed_after_registering_is_reused(
    pipeline: Pipeline, first: dict[str, Any], mlflow_client
) -> None:
    """The key is tagged on the version at creation: a relaunch finds it even without a FINISHED run."""
    v1 = mlflow_client.get_model_version(MODEL, "1")
    orphan = mlflow_client.create_model_version(
        MODEL, v1.source, run_id=v1.run_id, tags={"loopline.idempotency_key": "key-crashed"}).version
    before = len(mlflow_client.search_model_versions(f"name = '{MODEL}'"))
    request = {**first["request"], "idempotency_key": "key-crashed"}
    rerun = pipeline.step("train", "classifier-crashed", request, {"prepare": first["outputs"]["prepare"]})
    assert rerun.outputs["model_version"] == str(orphan) and rerun.outputs["reused"] is True
    assert len(mlflow_client.search_model_versions(f"name = '{MODEL}'")) == before


def test_find_finished_run_finds_a_steps_run_by_key(
    pipeline: Pipeline, second: dict[str, Any]
) -> None:
    ctx = context(pipeline.env("evaluate", "classifier-second", second["request"], {}))
    run = ctx.find_finished_run("train")
    assert run is not None and run.info.run_id == second["outputs"]["train"]["run_id"]
    assert ctx.find_finished_run("prepare") is None  # prepare logs no MLflow run
    assert ctx.find_finished_run() is None           # nor does evaluate


def test_an_unloadable_champion_is_reported_not_raised(
    pipeline: Pipeline, second: dict[str, Any], mlflow_client, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    version = mlflow_client.create_model_version(MODEL, broken.as_uri(), tags={"test": "broken"}).version
    mlflow_client.set_registered_model_alias(MODEL, "champion", version)
    try:
        inputs = {s: second["outputs"][s] for s in ("prepare", "train")}
        outputs = pipeline.step("evaluate", "classifier-second", second["request"], inputs).outputs
    finally:
        mlflow_client.set_registered_model_alias(MODEL, "champion", "1")
    assert outputs["champion_version"] == str(version) and outputs["champion_metrics"] is None
    assert outputs["champion_error"]
    assert outputs["candidate_metrics"]["accuracy"] > 0.85


def test_prepare_without_data_fails_clearly(pipeline: Pipeline) -> None:
    result = pipeline.step("prepare", "classifier-empty", pipeline.request("key-empty", []), check=False)
    assert result.returncode != 0
    assert "no data" in result.stderr and "Traceback" not in result.stderr


def test_the_train_run_records_its_batches_and_lineage_shows_them(
    first: dict[str, Any], pipeline: Pipeline, mlflow_client
) -> None:
    """MLflow dataset inputs (ctx.log_input): name = data version, digest = the batch file's sha256
    (in full: MLflow keeps 36 characters, the input tag the rest), source = the batch URI, schema."""
    from loopline.commands import lineage
    from loopline.settings import Settings

    batches = [data.write_batch(i, pipeline.root / "data") for i in range(0, 4)]   # same bytes
    run = mlflow_client.get_run(first["outputs"]["train"]["run_id"])
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [
        (b["version"], b["digest"][:36]) for b in batches]
    assert {t.key: t.value for t in inputs[0].tags} == {
        "mlflow.data.context": "training", "loopline.digest": batches[0]["digest"]}
    assert json.loads(inputs[0].dataset.source) == {"uri": batches[0]["uri"]}
    schema = json.loads(inputs[0].dataset.schema)["mlflow_colspec"]
    assert {c["name"]: c["type"] for c in schema} == {**{f"f{i}": "double" for i in range(6)}, "label": "long"}
    expected = [{"name": b["version"], "digest": b["digest"], "source": b["uri"], "source_type": "local",
                 "context": "training"} for b in batches]

    settings = Settings(mlflow_uri=pipeline.tracking_uri, state_dir=pipeline.root / "state")
    chain = lineage.collect(settings, MODEL, "1", topics=False)
    assert chain["run"]["datasets"] == expected
    out = io.StringIO()
    lineage.show(chain, Console(file=out, width=400, color_system=None))
    assert f"batch-00002 training {batches[2]['digest']} {batches[2]['uri']}" in out.getvalue()
    assert json.loads(json.dumps(chain, default=str))["run"]["datasets"] == expected   # the --json view


def test_log_input_takes_a_uri_alone(pipeline: Pipeline, mlflow_client) -> None:
    """A dataset given by its URI only: MLflow computes no schema; a short digest is kept as is."""
    batch = data.write_batch(9, pipeline.root / "data")
    ctx = context(pipeline.env("train", "uri-only", pipeline.request("key-uri", [batch]), {}))
    with ctx.start_run() as active:
        logged = ctx.log_input(batch["uri"], name="batch-00009", digest="md5:0123", context="eval")
    assert logged == {"name": "batch-00009", "digest": "md5:0123", "source": batch["uri"]}
    (item,) = mlflow_client.get_run(active.info.run_id).inputs.dataset_inputs
    assert (item.dataset.name, item.dataset.digest, item.dataset.source_type) == ("batch-00009", "md5:0123", "local")
    assert {t.key: t.value for t in item.tags} == {"mlflow.data.context": "eval"}
    assert item.dataset.schema is None
