"""Deterministic data stream for the example classifier, with a concept change.

Why: the continuous-training loop needs data that arrives in batches and, at a known
point, stops matching the model that was trained on it. Batches are a pure function of
(index, rows, seed, drift_at), so tests, the demo and benchmarks all see the same bytes
and the same digests.

The stream: six numeric features ``f0..f5`` drawn from N(0, 1) and a binary ``label``.
- concept A (batches before ``drift_at``): label = [2*f0 - f1 + f2 + 0.5*f3 + noise > 0]
- concept B (from ``drift_at`` on):       label = [0.5*f0 + f1 + f2 - 1.5*f4 + noise > 0]
A model trained on A scores ~0.55 accuracy on B; one retrained on B recovers ~0.9.
``f5`` never decides the label, but its mean shifts by +1.5 at the change point, so
feature-drift detectors see the change as well.

Run ``python -m examples.classifier.data --out DIR 0-7`` to write batches and print one
JSON descriptor per line (the payload of a data-arrival event).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepkit.atomic import replacing

FEATURES = [f"f{i}" for i in range(6)]
LABEL = "label"
CONCEPT_A = np.array([2.0, -1.0, 1.0, 0.5, 0.0, 0.0])
CONCEPT_B = np.array([0.5, 1.0, 1.0, 0.0, -1.5, 0.0])
NOISE = 0.5
NUISANCE_SHIFT = 1.5  # added to f5 after the change point


def batch(index: int, rows: int = 1000, seed: int = 7, drift_at: int = 4) -> pd.DataFrame:
    """Return batch ``index`` of the stream: ``rows`` rows of f0..f5 and label."""
    if index < 0 or rows <= 0:
        raise ValueError(f"need index >= 0 and rows > 0, got index={index} rows={rows}")
    rng = np.random.default_rng([seed, index])
    x = rng.standard_normal((rows, len(FEATURES)))
    drifted = index >= drift_at
    weights = CONCEPT_B if drifted else CONCEPT_A
    score = x @ weights + NOISE * rng.standard_normal(rows)
    if drifted:
        x[:, 5] += NUISANCE_SHIFT
    frame = pd.DataFrame(x, columns=FEATURES)
    frame[LABEL] = (score > 0).astype("int64")
    return frame


def batch_version(index: int) -> str:
    """Stable, sortable name of batch ``index`` (also its file stem)."""
    return f"batch-{index:05d}"


def write_batch(
    index: int, dir: str | Path, rows: int = 1000, seed: int = 7, drift_at: int = 4
) -> dict[str, Any]:
    """Write batch ``index`` as parquet under ``dir`` and describe it.

    Returns {"uri", "rows", "digest", "schema", "version"}; the digest is the sha256
    of the file bytes, so the same arguments always give the same digest.
    """
    frame = batch(index, rows=rows, seed=seed, drift_at=drift_at)
    version = batch_version(index)
    path = Path(dir).resolve() / f"{version}.parquet"
    with replacing(path) as tmp:  # readers never see half a file
        frame.to_parquet(tmp, index=False)
    return {
        "uri": path.as_uri(),
        "rows": len(frame),
        "digest": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
        "schema": {name: str(dtype) for name, dtype in frame.dtypes.items()},
        "version": version,
    }


def _parse_indices(spec: str) -> list[int]:
    """'0-3' -> [0, 1, 2, 3]; '5' -> [5]; '0,2,4-5' -> [0, 2, 4, 5]."""
    indices: list[int] = []
    for part in spec.split(","):
        start, _, end = part.partition("-")
        indices.extend(range(int(start), int(end or start) + 1))
    return indices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("indices", help="batch indices, e.g. 0-3 or 0,2,5-7")
    parser.add_argument("--out", required=True, help="directory to write parquet files to")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift-at", type=int, default=4)
    args = parser.parse_args(argv)
    for index in _parse_indices(args.indices):
        info = write_batch(index, args.out, rows=args.rows, seed=args.seed, drift_at=args.drift_at)
        print(json.dumps(info, sort_keys=True))


if __name__ == "__main__":
    main()
