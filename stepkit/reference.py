"""Reference data: what a model version was trained on, recorded small, read back cheaply.

Why: drift is "the data now is not the data the champion learned from". The training step
records that data once, at training time (`JobContext.log_reference`), as MLflow artifacts of
its run: a bounded, seeded sample (at most `MAX_ROWS` rows, so a 10 GB training set costs a few
hundred kB), a content digest and the dataset versions it came from, plus a per-column profile.
The drift monitor downloads it once per model version and caches it (`adapters.drift`).

    <run>/reference/sample.parquet    the sample (features, and the model's predictions on them)
    <run>/reference/meta.json         dataset versions, digest, row counts, dtypes, profile
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ARTIFACT_DIR = "reference"
SAMPLE_FILE = "sample.parquet"
META_FILE = "meta.json"
MAX_ROWS = 5000
TAG_DIGEST = "loopline.reference.digest"
TAG_VERSIONS = "loopline.reference.dataset_versions"


def sample(frame: pd.DataFrame, max_rows: int = MAX_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most `max_rows` rows, drawn without replacement with a fixed seed (same input, same sample)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def digest(frame: pd.DataFrame) -> str:
    """Content digest of a frame (values, column names and order), independent of file encoding."""
    import pandas as pd

    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return "sha256:" + h.hexdigest()


def profile(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A small per-column summary kept next to the sample (numbers: moments; others: top values)."""
    import pandas as pd

    out: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.dropna().astype(float)
            out[str(name)] = {"kind": "numerical", "count": int(values.size),
                              **({"mean": float(values.mean()), "std": float(values.std(ddof=0)),
                                  "min": float(values.min()), "max": float(values.max())}
                                 if values.size else {})}
        else:
            top = column.astype(str).value_counts().head(20)
            out[str(name)] = {"kind": "categorical", "count": int(column.notna().sum()),
                              "top": {str(k): int(v) for k, v in top.items()}}
    return out


def write(frame: pd.DataFrame, directory: Path, *, dataset_versions: list[str],
          max_rows: int = MAX_ROWS, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """Write sample + meta into `directory`; returns the meta."""
    directory.mkdir(parents=True, exist_ok=True)
    kept = sample(frame, max_rows, seed)
    kept.to_parquet(directory / SAMPLE_FILE, index=False)
    meta = {"dataset_versions": list(dataset_versions), "digest": digest(kept),
            "rows_total": int(len(frame)), "rows_sampled": int(len(kept)), "max_rows": max_rows,
            "seed": seed, "columns": {str(c): str(t) for c, t in kept.dtypes.items()},
            "profile": profile(kept), **extra}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return meta


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame
    meta: dict[str, Any]
    run_id: str | None = None

    @property
    def version_label(self) -> str:
        versions = self.meta.get("dataset_versions") or []
        return ",".join(versions) if versions else self.meta.get("digest", "?")


def read(directory: Path, run_id: str | None = None) -> Reference:
    import pandas as pd

    meta = json.loads((directory / META_FILE).read_text())
    return Reference(pd.read_parquet(directory / SAMPLE_FILE), meta, run_id)
