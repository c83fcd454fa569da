"""The promotion gate: may a freshly trained candidate replace the champion?

Why its own pure module: the gate is the audit point of the loop (TFX's Evaluator
"blessing"). Its answer is data -- `Promote` or `Reject` with every reason spelled out with
the numbers -- so the evaluator agent can publish it verbatim and an operator can read later
why v7 went live and v8 did not. The gate fails closed: anything it cannot check is a Reject.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Mapping

# Float noise must not flip a decision: 0.71 - 0.70 is 0.00999... and still "improves by 0.01".
_ABS_TOL = 1e-12


@dataclass(frozen=True)
class Gate:
    metric: str = "accuracy"
    # The absolute bar in the metric's direction: a floor when higher is better, a ceiling
    # when lower is better. None = no bar (a fixed 0.0 default would reject every loss > 0).
    min_value: float | None = None
    min_improvement: float = 0.0      # better-direction gain over the champion required
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("gate needs a metric name")
        if not math.isfinite(self.min_improvement):
            raise ValueError(f"min_improvement must be finite, got {self.min_improvement}")
        if self.min_value is not None and not math.isfinite(self.min_value):
            raise ValueError(f"min_value must be finite or None, got {self.min_value}")


@dataclass(frozen=True)
class Scores:
    version: str
    metrics: Mapping[str, float | None]


@dataclass(frozen=True)
class Promote:
    version: str
    reasons: tuple[str, ...]          # why it passed


@dataclass(frozen=True)
class Reject:
    version: str
    reasons: tuple[str, ...]          # every failed check


def decide_promotion(candidate: Scores, champion: Scores | None, gate: Gate) -> Promote | Reject:
    if champion is not None and candidate.version == champion.version:
        return Reject(candidate.version, (f"v{candidate.version} is already champion",))
    value, problem = _usable(candidate.metrics, gate.metric)
    if value is None:
        return Reject(candidate.version, (f"candidate v{candidate.version} {problem}",))

    passed: list[str] = []
    failed: list[str] = []
    ok, text = _check_bar(value, gate)
    (passed if ok else failed).append(text)
    ok, text = _check_champion(value, champion, gate)
    (passed if ok else failed).append(text)
    if failed:
        return Reject(candidate.version, tuple(failed))
    return Promote(candidate.version, tuple(passed))


def _check_bar(value: float, gate: Gate) -> tuple[bool, str]:
    if gate.min_value is None:
        return True, f"{gate.metric} {_fmt(value)} (no absolute bar)"
    if gate.higher_is_better:
        ok = value >= gate.min_value or _close(value, gate.min_value)
        op = ">=" if ok else "<"
    else:
        ok = value <= gate.min_value or _close(value, gate.min_value)
        op = "<=" if ok else ">"
    return ok, f"{gate.metric} {_fmt(value)} {op} {_fmt(gate.min_value)}"


def _check_champion(value: float, champion: Scores | None, gate: Gate) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion yet"
    best, problem = _usable(champion.metrics, gate.metric)
    if best is None:
        # Strict on purpose: treating an unreadable champion as "no champion" would let any
        # model over the bar replace it, possibly a regression nobody can see. Rejecting fails
        # closed, shows up in the audit trail, and an operator can still promote by hand.
        return False, f"champion v{champion.version} {problem}; cannot compare"
    gain = value - best if gate.higher_is_better else best - value
    ok = gain >= gate.min_improvement or _close(gain, gate.min_improvement)
    if ok:
        return True, (f"improves on v{champion.version} by {_fmt(gain, sign=True)}"
                      f" (>= {_fmt(gate.min_improvement)})")
    direction = "" if gate.higher_is_better else f", lower {gate.metric} is better"
    return False, (f"does not improve enough on v{champion.version}: {gate.metric} {_fmt(value)}"
                   f" vs {_fmt(best)} is {_fmt(gain, sign=True)}, needs >= "
                   f"{_fmt(gate.min_improvement)}{direction}")


def _usable(metrics: Mapping[str, object], name: str) -> tuple[float | None, str]:
    """The metric as a finite float, or None and a sentence saying what is wrong with it."""
    if name not in metrics or metrics[name] is None:
        return None, f"has no usable {name} (missing)"
    raw = metrics[name]
    # bool is an int subclass; True as an accuracy is a producer bug, not 1.0.
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None, f"has no usable {name} (not a number: {raw!r})"
    value = float(raw)
    if not math.isfinite(value):
        return None, f"has no usable {name} ({value})"
    return value, ""


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=_ABS_TOL)


def _fmt(x: float, sign: bool = False) -> str:
    return f"{x:+.4g}" if sign else f"{x:.4g}"
