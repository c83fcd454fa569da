"""A training step that talks to the MLflow tracking server over its REST API, with the standard
library only: no `import mlflow` (2.5-5 s of start-up on these machines), so a test can train
fifty models in the time one real step takes to import. It does for loopline what a real step
does (stepkit reads the contract and writes the outputs; the run and the registered version
carry stepkit's run and version tags, so lineage reads them as usual) around a model that is
only a registered version: the "accuracy" it reports is the `quality` parameter
(LOOPLINE_PARAM_QUALITY), so a test can tell a member's override from its family's value. With
LOOPLINE_PARAM_REAL_MODEL=true it logs a real (constant) model instead, for serving to load.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from stepkit import job


def call(method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
    url = f"{os.environ['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"{}")


def error_code(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error_code", "")
    except ValueError:
        return ""


def experiment_id(name: str) -> str:
    for attempt in range(2):
        try:
            return call("GET", "experiments/get-by-name", query={"experiment_name": name})["experiment"]["experiment_id"]
        except urllib.error.HTTPError as exc:
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST" or attempt:
                raise
        try:
            return call("POST", "experiments/create", {"name": name})["experiment_id"]
        except urllib.error.HTTPError as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":     # a concurrent step won: read it
                raise
    raise AssertionError("unreachable")


def tags(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def main() -> None:
    ctx = job.context()
    if ctx.params.get("real_model") == "true":     # a member that serving must load: a real model
        from bench.steps import trivial_train
        return trivial_train.main()
    accuracy = float(ctx.params.get("quality", "0.9"))
    now = int(time.time() * 1000)
    run = call("POST", "runs/create", {"experiment_id": experiment_id(ctx.model), "start_time": now,
                                       "run_name": f"{ctx.run_name}-{ctx.step}", "tags": tags(ctx.run_tags())})
    run_id = run["run"]["info"]["run_id"]
    call("POST", "runs/log-metric", {"run_id": run_id, "key": "accuracy", "value": accuracy,
                                     "timestamp": now, "step": 0})
    try:
        call("POST", "registered-models/create", {"name": ctx.model})
    except urllib.error.HTTPError as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
    version = call("POST", "model-versions/create", {
        "name": ctx.model, "source": f"runs:/{run_id}/model", "run_id": run_id,
        "tags": tags(ctx.version_tags())})["model_version"]["version"]
    call("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})
    ctx.output(run_id=run_id, model_version=version, candidate_version=version,
               candidate_metrics={"accuracy": accuracy})


if __name__ == "__main__":
    main()
