"""Online metrics: tumbling-window math over labelled predictions, and what a bad window means.

Why its own pure module: feedback arrives at least once and in volume, through a Faust agent
today and perhaps a batched consumer later. The window arithmetic (`window_bounds`, `fold`,
`closable`) is a pure function over batches of `(model_version, timestamp, score)` items so
either path computes the same windows; the decision about a closed window (`decide_on_metric`:
retrain, roll back, or skip) is a reducer over plain `GuardState`, tested by tables like the
retrain policy.

A window under its floor asks for a training (reason "metric"; the retrain reducer applies
cooldown, pause and in-flight coalescing to it). If the champion was deployed within
`rollback_guard_seconds` and the previous champion scored better online, the fresh deployment is
the likely culprit: the decision is a `Rollback` to the previous champion instead, requested at
most once per champion version (further bad windows are counted as suppressed). A version with
no online score of its own never justifies a rollback: no evidence, so retrain.

Time is a parameter; nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Mapping

from agents.policy.retrain import Skip

# name -> higher is better. Per prediction: accuracy 1/0 for a right/wrong label, error_rate the
# reverse, mae |label - prediction|, mse (label - prediction)^2; a window's value is the mean.
METRICS: dict[str, bool] = {"accuracy": True, "error_rate": False, "mae": False, "mse": False}
VERSIONS_KEPT = 10        # online scores kept for the newest N versions
SEEN_KEPT = 500           # window event keys remembered for dedupe


@dataclass(frozen=True)
class MetricPolicy:
    floor: float                          # the bar: a floor when higher is better, else a ceiling
    metric: str = "accuracy"
    window_seconds: int = 60              # tumbling window size
    min_count: int = 20                   # a window with fewer labelled predictions decides nothing
    rollback_guard_seconds: float = 0.0   # 0: never roll back, always retrain
    grace_seconds: float = 2.0            # late feedback still counted this long after a window ends

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if not math.isfinite(self.floor):
            raise ValueError(f"floor must be finite, got {self.floor}")
        if int(self.window_seconds) != self.window_seconds or self.window_seconds < 1:
            raise ValueError(f"window_seconds must be a whole number >= 1, got {self.window_seconds}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        for name in ("rollback_guard_seconds", "grace_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]

    def better(self, a: float, b: float) -> bool:
        """Is `a` strictly better than `b` in this metric's direction?"""
        return a > b if self.higher_is_better else a < b

    def acceptable(self, value: float) -> bool:
        return value >= self.floor if self.higher_is_better else value <= self.floor


# -- window math (pure; any consumer path can call it) -----------------------------------------

def score(metric: str, prediction: Any, label: Any) -> float:
    """One labelled prediction's contribution to `metric` (its window value is the mean)."""
    if metric in ("accuracy", "error_rate"):
        right = _same_label(prediction, label)
        return float(right if metric == "accuracy" else not right)
    if metric in ("mae", "mse"):
        error = float(label) - float(prediction)
        return abs(error) if metric == "mae" else error * error
    raise ValueError(f"unknown metric {metric!r}")


def _same_label(prediction: Any, label: Any) -> bool:
    if isinstance(prediction, bool) or isinstance(label, bool):
        return bool(prediction) == bool(label)
    if isinstance(prediction, (int, float)) and isinstance(label, (int, float)):
        return float(prediction) == float(label)
    return str(prediction) == str(label)


def window_bounds(timestamp: float, size: int) -> tuple[float, float]:
    """The tumbling window [start, end) holding `timestamp`, aligned to the epoch."""
    start = math.floor(timestamp / size) * size
    return float(start), float(start + size)


@dataclass(frozen=True)
class Counts:
    count: int = 0
    total: float = 0.0

    def add(self, other: Counts) -> Counts:
        return Counts(self.count + other.count, self.total + other.total)

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


WindowKey = tuple[str, float]             # (model_version, window_start)


def fold(items: Iterable[tuple[str, float, float]], size: int) -> dict[WindowKey, Counts]:
    """Aggregate a batch of (model_version, timestamp, score) into per-window counts.

    One pass, one dict update per item: the cheap per-event step. The caller merges the result
    into its stored windows with `Counts.add`, one store write per window touched, not per item.
    """
    out: dict[WindowKey, list] = {}
    for version, timestamp, value in items:
        start = math.floor(timestamp / size) * size
        cell = out.get((version, float(start)))
        if cell is None:
            out[(version, float(start))] = [1, value]
        else:
            cell[0] += 1
            cell[1] += value
    return {key: Counts(count, total) for key, (count, total) in out.items()}


def closable(window_start: float, size: int, grace: float, now: float) -> bool:
    """A window is reported once its end plus the grace for late feedback has passed."""
    return now >= window_start + size + grace


@dataclass(frozen=True)
class Window:
    """A closed window of one model version, as the metric event reports it."""
    event_key: str
    model_version: str
    start: float
    end: float
    count: int
    value: float


# -- the guard: what a closed window means ------------------------------------------------------

@dataclass(frozen=True)
class VersionScore:
    version: str
    count: int
    total: float

    @property
    def value(self) -> float:
        return self.total / self.count


@dataclass(frozen=True)
class GuardState:
    """Per-model memory of the metric guard; JSON-friendly for a Faust table."""
    champion: str | None = None
    deployed_at: float | None = None
    previous: str | None = None           # the champion before; None after a rollback
    scores: tuple[VersionScore, ...] = ()   # online score per version, newest versions last
    rollback_requested: str | None = None   # champion version a rollback was requested away from
    below_floor: int = 0                  # windows of the champion under the floor
    suppressed: int = 0                   # bad windows that asked for nothing (rollback pending)
    seen: tuple[str, ...] = ()

    def score_of(self, version: str | None) -> VersionScore | None:
        return next((s for s in self.scores if s.version == version), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GuardState:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "scores" in kw:
            kw["scores"] = tuple(s if isinstance(s, VersionScore) else VersionScore(**s)
                                 for s in kw["scores"])
        if "seen" in kw:
            kw["seen"] = tuple(kw["seen"])
        return cls(**kw)


@dataclass(frozen=True)
class Retrain:
    detail: str                           # reason "metric"; goes through the retrain reducer


@dataclass(frozen=True)
class Rollback:
    to: str
    from_version: str
    reason: str


MetricDecision = Retrain | Rollback | Skip


def on_deployment(state: GuardState, version: str, previous: str | None, at: float,
                  rolled_back: bool = False) -> GuardState:
    """The champion moved. A redelivered deployment of the current champion keeps its clock."""
    if version == state.champion and not rolled_back:
        return state
    return replace(state, champion=version, deployed_at=at,
                   previous=None if rolled_back else previous, rollback_requested=None)


def decide_on_metric(window: Window, state: GuardState, policy: MetricPolicy,
                     now: float) -> tuple[GuardState, MetricDecision]:
    """Apply one closed window: record its score, then retrain, roll back or skip."""
    if window.event_key in state.seen:
        return state, Skip(f"duplicate window {window.event_key}")
    state = replace(state, seen=_bounded(state.seen + (window.event_key,), SEEN_KEPT),
                    scores=_record(state.scores, window))
    what = f"{policy.metric} {window.value:.4g} over {window.count} predictions of v{window.model_version}"
    if window.count < policy.min_count:
        return state, Skip(f"{what}: fewer than min_count {policy.min_count}")
    if state.champion is not None and window.model_version != state.champion:
        return state, Skip(f"{what}: not the champion (v{state.champion})")
    if policy.acceptable(window.value):
        return state, Skip(f"{what}: within the floor {policy.floor:g}")
    state = replace(state, below_floor=state.below_floor + 1)
    bar = "floor" if policy.higher_is_better else "ceiling"
    breach = f"{what} breaks the {bar} {policy.floor:g}"
    if state.rollback_requested is not None and state.rollback_requested == window.model_version:
        return replace(state, suppressed=state.suppressed + 1), Skip(
            f"{breach}; rollback from v{window.model_version} already requested")
    rollback = _rollback(window, state, policy, now)
    if rollback is not None:
        return replace(state, rollback_requested=window.model_version), rollback
    return state, Retrain(breach)


def _rollback(window: Window, state: GuardState, policy: MetricPolicy,
              now: float) -> Rollback | None:
    if (policy.rollback_guard_seconds <= 0 or state.champion is None or state.previous is None
            or state.deployed_at is None or now - state.deployed_at > policy.rollback_guard_seconds):
        return None
    previous = state.score_of(state.previous)
    if previous is None or previous.count < policy.min_count:
        return None                       # no evidence the previous one was better
    if not policy.better(previous.value, window.value):
        return None
    age = now - state.deployed_at
    return Rollback(to=state.previous, from_version=window.model_version, reason=(
        f"{policy.metric} of v{window.model_version} {window.value:.4g} over {window.count} "
        f"predictions breaks the {policy.floor:g} bar {age:.0f}s after its deployment; the "
        f"previous champion v{state.previous} scored {previous.value:.4g} over {previous.count}"))


def _record(scores: tuple[VersionScore, ...], window: Window) -> tuple[VersionScore, ...]:
    old = next((s for s in scores if s.version == window.model_version), None)
    new = VersionScore(window.model_version, window.count, window.value * window.count)
    if old is not None:
        new = VersionScore(old.version, old.count + new.count, old.total + new.total)
    kept = tuple(s for s in scores if s.version != window.model_version) + (new,)
    return _bounded(kept, VERSIONS_KEPT)


def _bounded(items: tuple, limit: int) -> tuple:
    return items[-limit:] if len(items) > limit else items
