"""Pipeline step 2: train the example classifier and register it in MLflow.

Why: the step a continuous-training loop repeats. It shows the whole job-side contract in
a few lines: reuse the version an earlier launch of the same request already registered
(so a relaunched pipeline never registers twice), otherwise train, log params and
per-epoch metrics, record the batches it learned from as MLflow dataset inputs (version,
digest, URI, schema), and register the model with its lineage tags.

The model is StandardScaler + logistic regression fitted by SGD, one ``partial_fit`` pass
per epoch, so the loss curve is a natural per-epoch metric. Deterministic for a seed.

Run: python -m examples.classifier.train [--epochs 15] [--alpha 1e-4] [--seed 0]
                                         [--serialization skops|cloudpickle]
(each flag's default can also come from the model's params: LOOPLINE_PARAM_EPOCHS, ...)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stepkit.job import JobContext, context, params

LABEL = "label"
EpochCallback = Callable[[int, dict[str, float]], None]


def fit(x: pd.DataFrame, y: pd.Series, epochs: int, alpha: float, seed: int, on_epoch: EpochCallback) -> Pipeline:
    """Fit scaler + SGD logistic regression, reporting train loss/accuracy per epoch."""
    if y.nunique() < 2:
        raise SystemExit(f"train: the training data holds a single class ({y.iloc[0]}); nothing to learn")
    scaler = StandardScaler().fit(x)
    # fit on arrays: inside the Pipeline the scaler hands the classifier arrays, not frames
    scaled, labels = scaler.transform(x), y.to_numpy()
    clf = SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for epoch in range(epochs):
        order = rng.permutation(len(scaled))
        clf.partial_fit(scaled[order], labels[order], classes=classes)
        proba = clf.predict_proba(scaled)
        on_epoch(epoch, {
            "train_log_loss": log_loss(labels, proba, labels=classes),
            "train_accuracy": accuracy_score(labels, classes[proba.argmax(axis=1)]),
        })
    return Pipeline([("scale", scaler), ("clf", clf)])


def final_metrics(model: Pipeline, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    pred = model.predict(x)
    return {
        "train_accuracy": accuracy_score(y, pred),
        "train_f1": f1_score(y, pred),
        "train_roc_auc": roc_auc_score(y, model.predict_proba(x)[:, 1]),
    }


def log_batches(ctx: JobContext) -> list[dict[str, str]]:
    """Put the request's batches on the run's record (MLflow dataset inputs): per batch its data
    version, the sha256 of its bytes (the digest the data-arrival event carried) and its URI,
    with its schema. Each batch is a few hundred KB; reading it again costs milliseconds."""
    from pandas.io.common import get_handle  # pandas' own door to file://, s3://, gs:// (fsspec)

    logged = []
    versions = ctx.data_versions if len(ctx.data_versions) == len(ctx.data_uris) else []
    for i, uri in enumerate(ctx.data_uris):
        with get_handle(uri, "rb", is_text=False) as handles:
            raw = handles.handle.read()
        name = versions[i] if versions else uri.rstrip("/").rsplit("/", 1)[-1]
        logged.append(ctx.log_input(pd.read_parquet(io.BytesIO(raw)), name=name, source=uri,
                                    digest="sha256:" + hashlib.sha256(raw).hexdigest(), context="training"))
    return logged


def run(ctx: JobContext, epochs: int, alpha: float, seed: int, serialization: str = "skops") -> str:
    """Train and register; returns a one-line summary."""
    reused = ctx.reuse_model()
    if reused is not None:
        return f"reused model version {reused} already registered for key {ctx.idempotency_key}"
    train_uri = ctx.inputs("prepare")["train_uri"]
    data = pd.read_parquet(train_uri)
    x, y = data.drop(columns=[LABEL]), data[LABEL]
    params = {"model": "StandardScaler+SGDClassifier(log_loss)", "epochs": epochs, "alpha": alpha,
              "seed": seed, "train_rows": len(data), "train_uri": train_uri, "serialization": serialization}
    with ctx.start_run(**params):
        log_batches(ctx)
        model = fit(x, y, epochs, alpha, seed, lambda epoch, m: ctx.log_metrics(m, step=epoch))
        metrics = final_metrics(model, x, y)
        ctx.log_metrics(metrics)
        # What this version learned from, for the drift monitor: features + its predictions.
        ctx.log_reference(x.assign(prediction=model.predict(x)))
        version = ctx.log_model(model, input_example=x, serialization_format=serialization)
    return (f"registered {ctx.model} version {version} from {len(data)} rows "
            f"(train accuracy {metrics['train_accuracy']:.3f})")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    defaults = params()
    parser = argparse.ArgumentParser(description="train and register the example classifier")
    parser.add_argument("--epochs", type=int, default=defaults.get("epochs", 15))
    parser.add_argument("--alpha", type=float, default=defaults.get("alpha", 1e-4))
    parser.add_argument("--seed", type=int, default=defaults.get("seed", 0))
    parser.add_argument("--serialization", choices=["skops", "cloudpickle"],
                        default=defaults.get("serialization", "skops"),
                        help="skops loads without running code; cloudpickle saves ~1.5 s per step")
    args = parser.parse_args(argv)
    summary = run(context(), args.epochs, args.alpha, args.seed, args.serialization)
    print(f"train: {summary} ({time.perf_counter() - started:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
