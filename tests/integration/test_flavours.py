"""The job helper logs sklearn, pyfunc and ONNX models, and serving loads every one of them.

Real parts: a real MLflow SQLite store, models logged with `ctx.log_model(..., flavor=...)` inside
`ctx.start_run()` (so registered with the step's lineage tags), each loaded back with
`mlflow.pyfunc.load_model("models:/NAME/VERSION")` exactly as serving.server's loader does, and
one real `loopline serve` process (on the session's broker) answering a predict for the ONNX
version: an skl2onnx graph run by onnxruntime, no scikit-learn in the loaded model.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml

from devstack.stack import REPO, Process
from stepkit.job import context
from streams.admin import ensure_topics
from streams.broker import free_port
from streams.topics import Topics
from tests.waiting import wait_until

FRAME = pd.DataFrame({"a": [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 0.2, -0.3],
                      "b": [0.1, -0.3, 0.2, 0.0, -0.1, 0.3, 1.5, -1.2]})
ROWS = pd.DataFrame({"a": [1.5, -0.7, 0.3], "b": [0.2, 1.0, -2.0]})


class Doubler(mlflow.pyfunc.PythonModel):
    """A pyfunc model with no library behind it: 2a - b."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return (2 * model_input["a"] - model_input["b"]).to_numpy()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite store; MLflow's process-wide URIs (and their env vars) put back afterwards."""
    root = tmp_path_factory.mktemp("flavours")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {name: os.environ.pop(name, None) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield root, uri
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def step_context(root: Path, model: str, key: str):
    return context({
        "LOOPLINE_STEP": "train", "LOOPLINE_RUN_NAME": f"{model}-{key}", "LOOPLINE_MODEL": model,
        "LOOPLINE_OUTPUTS": str(root / f"{model}-{key}.outputs.json"), "LOOPLINE_IDEMPOTENCY_KEY": key,
        "LOOPLINE_STATE_DIR": str(root / "state"),
        "LOOPLINE_REQUEST": json.dumps({"data_versions": ["batch-00000"], "reason": "flavours"}),
    })


@pytest.fixture(scope="module")
def logged(store):
    """One model of each flavour logged through the job helper: {flavor: (ctx, version, expected)}."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression

    root, _ = store
    target = 2 * FRAME.a - FRAME.b + 0.5
    classifier = LogisticRegression().fit(FRAME, (FRAME.a > 0).astype(int))
    regressor = LinearRegression().fit(FRAME, target)
    graph = to_onnx(regressor, FRAME.to_numpy(np.float32)[:1], target_opset=17)
    out = {}
    for flavor, model, expected, extra in [
        ("sklearn", classifier, classifier.predict(ROWS), {}),
        ("pyfunc", Doubler(), (2 * ROWS.a - ROWS.b).to_numpy(), {"pip_requirements": ["mlflow", "pandas"]}),
        ("onnx", graph, regressor.predict(ROWS), {}),
    ]:
        ctx = step_context(root, f"clf-{flavor}", f"key-{flavor}")
        with ctx.start_run():
            version = ctx.log_model(model, FRAME, flavor=flavor, **extra)
        out[flavor] = (ctx, version, expected)
    return out


@pytest.mark.parametrize("flavor", ["sklearn", "pyfunc", "onnx"])
def test_each_flavour_is_registered_with_signature_example_and_lineage(logged, flavor):
    ctx, version, expected = logged[flavor]
    found = ctx.client.get_model_version(ctx.model, version)
    assert found.tags["loopline.idempotency_key"] == f"key-{flavor}"
    assert found.tags["loopline.flavor"] == flavor
    assert ctx.outputs() == {"run_id": found.run_id, "model_version": version, "reused": False}
    assert ctx.client.get_run(found.run_id).data.tags["loopline.model_version"] == version
    assert ctx.reuse_model() == version                   # a redelivered request finds it

    # loaded exactly as serving.server's loader does
    loaded = mlflow.pyfunc.load_model(f"models:/{ctx.model}/{version}")
    meta = loaded.metadata
    assert flavor in meta.flavors or (flavor == "pyfunc" and "python_function" in meta.flavors)
    assert meta.get_input_schema().input_names() == ["a", "b"]
    assert meta.get_output_schema() is not None       # inferred from the model's own predictions
    answer = loaded.predict(ROWS)
    predictions = np.asarray(answer.iloc[:, 0] if isinstance(answer, pd.DataFrame) else answer).ravel()
    np.testing.assert_allclose(predictions, np.asarray(expected).ravel(), rtol=1e-5, atol=1e-5)


def test_onnx_version_loads_without_scikit_learn_in_its_requirements(logged):
    ctx, version, _ = logged["onnx"]
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{ctx.model}/{version}"))
    requirements = (local / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "scikit-learn" not in requirements
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == ["a", "b"] and len(example["data"]) == 5


def test_loopline_serve_answers_a_predict_from_the_onnx_version(logged, store, bootstrap, prefix):
    from mlflow import MlflowClient

    root, uri = store
    ctx, version, expected = logged["onnx"]
    MlflowClient(uri, uri).set_registered_model_alias(ctx.model, "champion", version)
    topics = Topics(prefix, 1)
    ensure_topics(bootstrap, topics)
    config = root / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": ctx.model, "pipeline": {
        "steps": [{"name": "evaluate", "command": ["true"]}]}}]}))
    env = {**os.environ, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_STATE_DIR": str(root / "serve-state"),
           "LOOPLINE_CONFIG": str(config), "LOOPLINE_TOPIC_PREFIX": prefix, "LOOPLINE_PARTITIONS": "1",
           "LOOPLINE_MLFLOW_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    server = Process("serving-onnx", [sys.executable, "-m", "loopline.cli", "serve", "--port", str(port)],
                     env, root / "serving-onnx.log")

    def call(method: str, path: str, body=None):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return 0, {}

    try:
        def ready() -> bool:
            server.check()
            return call("GET", "/readyz")[0] == 200

        wait_until(ready, 60, "loopline serve ready with the ONNX version")
        status, answer = call("POST", f"/models/{ctx.model}/predict", {"rows": ROWS.to_dict("records")})
        assert status == 200, answer
        assert answer["version"] == version
        got = np.asarray(answer["predictions"], dtype=float).ravel()
        np.testing.assert_allclose(got, np.asarray(expected).ravel(), rtol=1e-5, atol=1e-5)
    finally:
        server.stop()
