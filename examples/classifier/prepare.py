"""Pipeline step 1: gather the request's data batches and split them by time.

Why: training and evaluation must agree on what is "new" data. The newest rows (the tail
of the batches, in the order the request lists them: oldest first) become the holdout, so
the candidate and the champion are both judged on data neither was trained on and that
looks like what serving sees now. Writes train.parquet and holdout.parquet under
STATE_DIR/runs-data/<run_name>/ and outputs their URIs and row counts.

Deliberately imports no mlflow: this step only moves data.

Run: python -m examples.classifier.prepare [--holdout-fraction 0.25]
(or set the model parameter holdout_fraction, i.e. LOOPLINE_PARAM_HOLDOUT_FRACTION)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd

from stepkit.atomic import replacing
from stepkit.job import JobContext, context, params

LABEL = "label"
MIN_ROWS = 10


def load(uris: list[str]) -> pd.DataFrame:
    """Read every parquet URI (file://, s3://, ... via fsspec) and stack them in order."""
    if not uris:
        raise SystemExit("prepare: no data: the training request lists no data_uris")
    frames = [pd.read_parquet(uri) for uri in uris]
    data = pd.concat(frames, ignore_index=True)
    if LABEL not in data.columns:
        raise SystemExit(f"prepare: the data has no {LABEL!r} column (columns: {list(data.columns)})")
    if len(data) < MIN_ROWS:
        raise SystemExit(f"prepare: only {len(data)} rows in {len(uris)} batch(es); need {MIN_ROWS}")
    return data


def split(data: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time-ordered split: the last ``holdout_fraction`` of rows is the holdout."""
    n_holdout = min(len(data) - 1, max(1, math.ceil(len(data) * holdout_fraction)))
    cut = len(data) - n_holdout
    return data.iloc[:cut], data.iloc[cut:]


def write(frame: pd.DataFrame, path: Path) -> str:
    """Write ``frame`` atomically and return its file:// URI."""
    with replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path.resolve().as_uri()


def run(ctx: JobContext, holdout_fraction: float) -> None:
    data = load(ctx.data_uris)
    train, holdout = split(data, holdout_fraction)
    out_dir = ctx.state_dir / "runs-data" / ctx.run_name
    ctx.output(
        train_uri=write(train, out_dir / "train.parquet"),
        holdout_uri=write(holdout, out_dir / "holdout.parquet"),
        train_rows=len(train),
        holdout_rows=len(holdout),
        features=[c for c in data.columns if c != LABEL],
    )


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description="split the request's data into train and holdout")
    parser.add_argument("--holdout-fraction", type=float, default=params().get("holdout_fraction", 0.25))
    args = parser.parse_args(argv)
    if not 0 < args.holdout_fraction < 1:
        parser.error("--holdout-fraction must be between 0 and 1")
    ctx = context()
    run(ctx, args.holdout_fraction)
    out = ctx.outputs()
    print(
        f"prepare: {len(ctx.data_uris)} batch(es) -> {out['train_rows']} train / "
        f"{out['holdout_rows']} holdout rows ({time.perf_counter() - started:.2f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
