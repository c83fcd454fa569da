"""Drift monitoring: what to compare, how, and when a comparison counts as drift.

Why its own pure module: the statistics run elsewhere (Evidently, in a process pool, behind the
`DriftChecker` port), but which columns are compared, with which test and threshold, how many
drifted columns make a batch "drifted", and when enough prediction-log rows have gathered to be
worth a check, are per-model settings from `loopline.yaml` and plain rules over them. Keeping
them here keeps the agent thin and the rules testable without Evidently or a broker.

Method names are Evidently's stat-test names ("ks", "wasserstein", "psi", "jensenshannon", ...);
None lets Evidently pick by column type and size, as its DataDriftPreset does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class DriftPolicy:
    columns: tuple[str, ...] | None = None         # None: every column of the reference
    categorical: tuple[str, ...] = ()              # compared as categories; the rest as numbers
    num_method: str | None = None
    cat_method: str | None = None
    methods: Mapping[str, str] = field(default_factory=dict)        # per column, wins over type
    num_threshold: float | None = None
    cat_threshold: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)   # per column
    drift_share: float = 0.5                       # share of drifted columns that is drift
    check_data: bool = True                        # check each data-arrival batch
    check_predictions: bool = True                 # check the serving prediction log
    prediction_rows: int = 1000                    # prediction rows gathered per check

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.prediction_rows < 1:
            raise ValueError(f"prediction_rows must be >= 1, got {self.prediction_rows}")
        for name, value in [("num_threshold", self.num_threshold),
                            ("cat_threshold", self.cat_threshold), *self.thresholds.items()]:
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"threshold {name} must be finite and >= 0, got {value}")

    def compared(self, reference: tuple[str, ...], current: tuple[str, ...]) -> tuple[str, ...]:
        """The columns one check compares: configured (or all of the reference) and present in both."""
        wanted = self.columns if self.columns is not None else reference
        return tuple(c for c in wanted if c in reference and c in current)

    def method_for(self, column: str) -> str | None:
        if column in self.methods:
            return self.methods[column]
        return self.cat_method if column in self.categorical else self.num_method

    def threshold_for(self, column: str) -> float | None:
        if column in self.thresholds:
            return self.thresholds[column]
        return self.cat_threshold if column in self.categorical else self.num_threshold


@dataclass(frozen=True)
class ColumnDrift:
    score: float
    method: str          # Evidently's display name of the test, e.g. "Wasserstein distance (normed)"
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "method": self.method, "threshold": self.threshold,
                "drifted": self.drifted}


def decide_drift(columns: Mapping[str, ColumnDrift], policy: DriftPolicy) -> tuple[float, bool]:
    """(share of drifted columns, is the batch drifted): at least one drifted column, and a share
    of at least `drift_share` (Evidently's dataset-drift rule)."""
    if not columns:
        return 0.0, False
    drifted = sum(1 for c in columns.values() if c.drifted)
    share = drifted / len(columns)
    return share, drifted > 0 and share >= policy.drift_share - 1e-12


@dataclass
class PredictionBuffer:
    """Prediction-log rows gathered per (model, version) until a check is worth it.

    In memory on purpose: it is a sample for monitoring, not a record. A worker that dies loses at
    most one partial buffer per model version; the prediction topic keeps the full log.
    """
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None

    def add(self, ids: list[str], features: list[dict[str, Any]], predictions: list[Any],
            prediction_column: str = "prediction") -> None:
        if not ids:
            return
        self.first_id = self.first_id or ids[0]
        self.last_id = ids[-1]
        for row, prediction in zip(features, predictions):
            self.rows.append({**row, prediction_column: prediction})

    def ready(self, policy: DriftPolicy) -> bool:
        return len(self.rows) >= policy.prediction_rows

    def take(self) -> tuple[list[dict[str, Any]], str]:
        """The rows and a dataset version naming them; the buffer starts over."""
        rows, version = self.rows, f"predictions:{self.first_id}..{self.last_id}"
        self.rows, self.first_id, self.last_id = [], None, None
        return rows, version
