"""stepkit.job without MLflow: the env contract, inputs, and the outputs file.

Why: every pipeline step depends on these few functions behaving exactly as the launcher
expects: a clear error outside a pipeline, outputs merged and never half-written.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from stepkit import job
from stepkit.job import JobContextError, MissingInputError, context


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "LOOPLINE_STEP": "train",
        "LOOPLINE_RUN_NAME": "churn-abc123",
        "LOOPLINE_RUN_DIR": str(tmp_path / "run"),
        "LOOPLINE_OUTPUTS": str(tmp_path / "run" / "train.outputs.json"),
        "LOOPLINE_INPUTS": json.dumps({"prepare": {"train_uri": "file:///x/train.parquet", "train_rows": 3}}),
        "LOOPLINE_MODEL": "churn",
        "LOOPLINE_IDEMPOTENCY_KEY": "key-1",
        "LOOPLINE_CORRELATION_ID": "corr-1",
        "LOOPLINE_CAUSATION_ID": "cause-1",
        "LOOPLINE_REQUEST": json.dumps({
            "model": "churn", "idempotency_key": "key-1", "reason": "2 batches landed",
            "data_uris": ["file:///d/batch-00000.parquet", "file:///d/batch-00001.parquet"],
            "data_versions": ["batch-00000", "batch-00001"], "rows": 2000,
        }),
        "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
        "LOOPLINE_PARAM_EPOCHS": "3",
    }


# -- context() ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", job.REQUIRED_ENV)
def test_context_names_the_missing_variable(env: dict[str, str], name: str) -> None:
    del env[name]
    with pytest.raises(JobContextError, match=name) as err:
        context(env)
    assert "inside a loopline pipeline step" in str(err.value)


def test_context_outside_a_pipeline_lists_every_missing_variable() -> None:
    with pytest.raises(JobContextError) as err:
        context({})
    assert all(name in str(err.value) for name in job.REQUIRED_ENV)


def test_context_reads_the_contract(env: dict[str, str], tmp_path: Path) -> None:
    ctx = context(env)
    assert (ctx.model, ctx.step, ctx.run_name) == ("churn", "train", "churn-abc123")
    assert (ctx.idempotency_key, ctx.correlation_id, ctx.causation_id) == ("key-1", "corr-1", "cause-1")
    assert ctx.data_uris == ["file:///d/batch-00000.parquet", "file:///d/batch-00001.parquet"]
    assert ctx.data_versions == ["batch-00000", "batch-00001"]
    assert ctx.reason == "2 batches landed"
    assert ctx.state_dir == tmp_path / "state"
    assert ctx.params == {"epochs": "3"}
    assert ctx.request_event is None


def test_request_may_be_the_cloudevent_that_carried_it(env: dict[str, str]) -> None:
    data = {"idempotency_key": "key-1", "reason": "drift", "data_uris": ["file:///d/b.parquet"],
            "data_versions": ["b"], "rows": 10}
    env["LOOPLINE_REQUEST"] = json.dumps({
        "specversion": "1.0", "id": "evt-9", "source": "loopline/agents", "subject": "churn",
        "type": "io.loopline.training.requested", "correlationid": "corr-from-event", "data": data,
    })
    del env["LOOPLINE_CORRELATION_ID"], env["LOOPLINE_CAUSATION_ID"]
    ctx = context(env)
    assert ctx.request == {**data, "model": "churn"}
    assert ctx.data_uris == ["file:///d/b.parquet"] and ctx.reason == "drift"
    assert (ctx.correlation_id, ctx.causation_id) == ("corr-from-event", "evt-9")
    assert ctx.request_event is not None and ctx.request_event["id"] == "evt-9"


@pytest.mark.parametrize("name, raw", [("LOOPLINE_INPUTS", "{not json"), ("LOOPLINE_REQUEST", "[1, 2]"),
                                       ("LOOPLINE_INPUTS", '{"prepare": 3}')])
def test_bad_json_names_the_variable(env: dict[str, str], name: str, raw: str) -> None:
    env[name] = raw
    with pytest.raises(JobContextError, match=name):
        context(env)


def test_optional_variables_default_to_empty(env: dict[str, str]) -> None:
    for name in ("LOOPLINE_INPUTS", "LOOPLINE_REQUEST", "LOOPLINE_CORRELATION_ID", "LOOPLINE_RUN_DIR"):
        del env[name]
    ctx = context(env)
    assert ctx.request == {} and ctx.data_uris == [] and ctx.correlation_id == "" and ctx.run_dir is None


def test_params_work_outside_a_pipeline() -> None:
    assert job.params({"LOOPLINE_PARAM_HOLDOUT_FRACTION": "0.2", "OTHER": "x"}) == {"holdout_fraction": "0.2"}


# -- inputs() -----------------------------------------------------------------------------


def test_inputs_returns_an_earlier_steps_outputs(env: dict[str, str]) -> None:
    assert context(env).inputs("prepare") == {"train_uri": "file:///x/train.parquet", "train_rows": 3}


def test_missing_input_is_a_keyerror_that_says_what_exists(env: dict[str, str]) -> None:
    with pytest.raises(KeyError) as err:
        context(env).inputs("featurize")
    assert isinstance(err.value, MissingInputError)
    message = str(err.value)
    assert "'featurize'" in message and "completed steps: prepare" in message and "'train'" in message


# -- output() -----------------------------------------------------------------------------


def test_output_merges_into_the_file(env: dict[str, str]) -> None:
    ctx = context(env)
    ctx.output(run_id="r1", model_version="1")
    ctx.output(model_version="2", metrics={"accuracy": 0.9}, versions=["a", "b"])
    assert json.loads(Path(env["LOOPLINE_OUTPUTS"]).read_text()) == {
        "run_id": "r1", "model_version": "2", "metrics": {"accuracy": 0.9}, "versions": ["a", "b"]}
    assert ctx.outputs()["model_version"] == "2"


def test_output_keeps_what_the_file_already_holds(env: dict[str, str]) -> None:
    path = Path(env["LOOPLINE_OUTPUTS"])
    path.parent.mkdir(parents=True)
    path.write_text('{"written_by": "an earlier attempt"}')
    context(env).output(extra=1)
    assert json.loads(path.read_text()) == {"written_by": "an earlier attempt", "extra": 1}


def test_output_accepts_an_empty_file_and_numpy_values(env: dict[str, str]) -> None:
    path = Path(env["LOOPLINE_OUTPUTS"])
    path.parent.mkdir(parents=True)
    path.write_text("")
    context(env).output(rows=np.int64(3), score=np.float32(0.5), ids=np.arange(2), path=Path("/a"))
    assert json.loads(path.read_text()) == {"rows": 3, "score": 0.5, "ids": [0, 1], "path": "/a"}


@pytest.mark.parametrize("bad", [object(), float("nan"), {"x": float("inf")}])
def test_a_failed_output_leaves_the_file_untouched(env: dict[str, str], bad: object) -> None:
    ctx = context(env)
    ctx.output(kept=True)
    before = Path(env["LOOPLINE_OUTPUTS"]).read_bytes()
    with pytest.raises(JobContextError, match="JSON"):
        ctx.output(bad=bad)
    assert Path(env["LOOPLINE_OUTPUTS"]).read_bytes() == before
    assert sorted(p.name for p in Path(env["LOOPLINE_OUTPUTS"]).parent.iterdir()) == ["train.outputs.json"]


def test_readers_never_see_a_half_written_file(env: dict[str, str]) -> None:
    ctx = context(env)
    ctx.output(n=-1)
    path, seen, errors, done = Path(env["LOOPLINE_OUTPUTS"]), set(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(json.loads(path.read_text())["n"])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(200):
            ctx.output(n=n, payload="x" * 20_000)
    finally:
        done.set()
        reader.join()
    assert errors == [] and len(seen) > 1
    assert json.loads(path.read_text())["n"] == 199


# -- log_model(flavor=...) ----------------------------------------------------------------


def test_unknown_flavour_names_the_known_ones_before_anything_is_logged(env: dict[str, str]) -> None:
    import mlflow
    import pandas as pd

    ctx = context(env)
    with pytest.raises(JobContextError) as err:
        ctx.log_model(object(), pd.DataFrame({"a": [1.0]}), flavor="tourch")   # no active run either
    message = str(err.value)
    assert "unknown MLflow flavour 'tourch'" in message
    known = message.split("known flavours: ")[1].split(", ")
    assert {"sklearn", "pyfunc", "onnx", "pytorch", "keras", "xgboost"} <= set(known)
    assert mlflow.active_run() is None and not Path(env["LOOPLINE_OUTPUTS"]).exists()


def test_known_flavours_are_the_mlflow_modules_that_log_models() -> None:
    known = job.known_flavors()
    # modules of mlflow that are not model flavours (tracing integrations, helpers) are not offered
    assert not {"tracking", "metrics", "gemini", "models", "data", "utils"} & set(known)
    assert job.flavor_module("onnx").FLAVOR_NAME == "onnx"
    assert job.flavor_module("pyfunc").FLAVOR_NAME == "python_function"
