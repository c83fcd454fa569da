"""Pipeline step for the fault tests: register a constant model, as a real training step would.

What loopline needs from a training step, and nothing else: reuse the version an earlier launch
of the same request registered (like examples.classifier.train, so a relaunch never registers
twice), else an MLflow run tagged with the request, a pyfunc model logged to it and registered
as a version carrying the request's lineage tags, and run_id / model_version in the outputs.
The model answers 0 to everything: no data is read and nothing is fitted, and neither
scikit-learn nor pandas is imported, so the step costs `import mlflow` and a few store writes
(~2 s; the example's prepare + train + evaluate take ~10 s).

Run (inside a pipeline): python -m tests.faults.steps.train
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import mlflow.pyfunc

from stepkit import job


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


def main() -> None:
    ctx = job.context()
    if ctx.reuse_model() is not None:
        return
    # The request must name the data that triggered it, as the example's prepare step demands.
    missing = [uri for uri in ctx.data_uris if not Path(url2pathname(urlparse(uri).path)).exists()]
    if not ctx.data_uris or missing:
        raise SystemExit(f"train: the request's data is not there: data_uris {ctx.data_uris}")
    with ctx.start_run(model="constant 0", data_uris=len(ctx.data_uris)) as run:
        info = mlflow.pyfunc.log_model(name=job.MODEL_ARTIFACT, python_model=Constant(),
                                       pip_requirements=[])   # skips requirements inference
        # What ctx.log_model does for scikit-learn models: register with the lineage tags set
        # in the same call (find_registered_version relies on it), tag the run with the version.
        version = ctx._register(info.model_uri, info.model_id, run.info.run_id)
        mlflow.set_tag(job.TAG_PREFIX + "model_version", version)
    ctx.output(run_id=run.info.run_id, model_version=version, reused=False)
    print(f"train: registered {ctx.model} version {version} (constant model)")


if __name__ == "__main__":
    main()
