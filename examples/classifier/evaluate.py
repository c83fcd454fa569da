"""Pipeline step 3: score the candidate and the current champion on the same holdout.

Why: promotion must compare like with like. This step (TFX's Evaluator, as a pipeline
step so a minutes-long evaluation never runs inside an agent) loads the candidate version
and the version the ``champion`` alias points at, scores both on the holdout prepare
wrote, logs the numbers to the candidate's run and outputs them for the evaluator agent's
gate. No champion is normal for a model's first version; a champion that cannot be
loaded or scored is reported as ``champion_error``, not a crash.

Slices: the example data has no natural segment column, so the slice ``segment`` is derived
from the sign of ``f0`` (``neg``/``pos``: both concepts weigh f0, so a model can be good on
one side and poor on the other). Accuracy per slice is reported as flat keys of the metrics,
``accuracy@segment=neg``, the form the gate's sliced checks read. Latency: the candidate's
predict() on one row at a time, for up to ``LATENCY_ROWS`` holdout rows (the request size
serving sees most), reported as ``candidate_latency_ms_p95`` for the gate's infra check.

Run: python -m examples.classifier.evaluate
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from stepkit.job import JobContext, context

LABEL = "label"
CHAMPION = "champion"
SLICE = "segment"
LATENCY_ROWS = 200      # single-row predict() calls timed; ~1-2 ms each through pyfunc


def load(ctx: JobContext, version: str) -> Any:
    """Load one registered version as a pyfunc model.

    suppress_warnings skips MLflow's requirement-mismatch check, which scans every
    installed distribution (~0.5 s); a model that cannot run here fails when scored.
    """
    return mlflow.pyfunc.load_model(f"models:/{ctx.model}/{version}", suppress_warnings=True)


def score(model: Any, holdout: pd.DataFrame) -> dict[str, float]:
    """accuracy and f1 from predict(); roc_auc when the raw model has predict_proba."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    x, y = holdout.drop(columns=[LABEL]), holdout[LABEL].to_numpy()
    pred = np.asarray(model.predict(x)).ravel()
    metrics = {"accuracy": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, zero_division=0))}
    proba = _positive_proba(model, x)
    if proba is not None and len(np.unique(y)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y, proba))
    segments = segment(holdout)
    for value in sorted(set(segments)):
        rows = segments == value
        metrics[f"accuracy@{SLICE}={value}"] = float(accuracy_score(y[rows], pred[rows]))
    return metrics


def segment(holdout: pd.DataFrame) -> np.ndarray:
    """The slice column of each holdout row: the sign of f0, as neg/pos."""
    return np.where(holdout["f0"].to_numpy() < 0, "neg", "pos")


def latency_p95_ms(model: Any, holdout: pd.DataFrame, rows: int = LATENCY_ROWS) -> float:
    """p95 of predict() on one row at a time over (a seeded sample of) the holdout, in ms."""
    x = holdout.drop(columns=[LABEL])
    if len(x) > rows:
        x = x.sample(rows, random_state=0)
    model.predict(x.iloc[:1])                     # the first call pays one-off costs
    timings = []
    for i in range(len(x)):
        row = x.iloc[i:i + 1]
        started = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 95))


def _positive_proba(model: Any, x: pd.DataFrame) -> np.ndarray | None:
    try:
        return model.get_raw_model().predict_proba(x)[:, 1]
    except Exception:  # not every flavor exposes probabilities; roc_auc is optional
        return None


def champion_version(ctx: JobContext) -> str | None:
    """Version the champion alias points at, or None when there is no champion yet."""
    try:
        version = ctx.client.get_registered_model(ctx.model).aliases.get(CHAMPION)
        return None if version is None else str(version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def evaluate_champion(ctx: JobContext, holdout: pd.DataFrame) -> dict[str, Any]:
    """Champion outputs; failures become champion_error so the gate can decide."""
    version = None
    try:
        version = champion_version(ctx)
        if version is None:
            return {"champion_version": None, "champion_metrics": None}
        model = load(ctx, version)  # the pinned version, not the alias that may move meanwhile
        return {"champion_version": version, "champion_metrics": score(model, holdout)}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return {"champion_version": version, "champion_metrics": None,
                "champion_error": f"{type(exc).__name__}: {first_line}"[:500]}


def log_to_candidate_run(ctx: JobContext, run_id: str, result: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(_metric_name(f"eval_candidate_{k}"), v, now, 0) for k, v in result["candidate_metrics"].items()]
    metrics += [Metric(_metric_name(f"eval_champion_{k}"), v, now, 0)
                for k, v in (result["champion_metrics"] or {}).items()]
    metrics.append(Metric("eval_candidate_latency_ms_p95", result["candidate_latency_ms_p95"], now, 0))
    tags = [RunTag("loopline.eval.champion_version", str(result["champion_version"] or "")),
            RunTag("loopline.eval.holdout_rows", str(result["holdout_rows"]))]
    ctx.client.log_batch(run_id, metrics=metrics, tags=tags)


def _metric_name(key: str) -> str:
    """MLflow metric names take no @ or =: accuracy@segment=neg is logged as accuracy/segment/neg."""
    return key.replace("@", "/").replace("=", "/")


def run(ctx: JobContext) -> dict[str, Any]:
    train, prepare = ctx.inputs("train"), ctx.inputs("prepare")
    holdout = pd.read_parquet(prepare["holdout_uri"])
    version = str(train["model_version"])
    candidate = load(ctx, version)
    result = {"candidate_version": version, "candidate_metrics": score(candidate, holdout),
              "candidate_latency_ms_p95": latency_p95_ms(candidate, holdout),
              "holdout_rows": len(holdout), **evaluate_champion(ctx, holdout)}
    run_id = train.get("run_id") or ctx.client.get_model_version(ctx.model, version).run_id
    log_to_candidate_run(ctx, run_id, result)
    ctx.output(candidate_run_id=run_id, **result)
    return result


def _summary(result: dict[str, Any]) -> str:
    line = (f"candidate v{result['candidate_version']} accuracy {result['candidate_metrics']['accuracy']:.3f}"
            f" (predict p95 {result['candidate_latency_ms_p95']:.2f} ms)")
    if result.get("champion_error"):
        return f"{line}; champion v{result['champion_version']} failed: {result['champion_error']}"
    if result["champion_version"] is None:
        return f"{line}; no champion yet"
    return f"{line} vs champion v{result['champion_version']} {result['champion_metrics']['accuracy']:.3f}"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="score candidate and champion on the holdout").parse_args(argv)
    started = time.perf_counter()
    result = run(context())
    print(f"evaluate: {_summary(result)} on {result['holdout_rows']} holdout rows "
          f"({time.perf_counter() - started:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
