"""The promotion gate: may a freshly trained candidate replace the champion?

Why its own pure module: the gate is the audit point of the loop (TFX's Evaluator
"blessing"). Its answer is data -- `Promote` or `Reject` with every reason spelled out with
the numbers -- so the evaluator agent can publish it verbatim and an operator can read later
why v7 went live and v8 did not. The gate fails closed: anything it cannot check is a Reject.

Two shapes, one decision:
- the single-metric gate (`metric`, `min_value`, `min_improvement`, `higher_is_better`): its
  reasons are the failed checks on a Reject and the passed ones on a Promote (as always);
- a gate with `checks` (TFX Evaluator's value and change thresholds, MLflow's MetricThreshold):
  every check has its own absolute bar and minimum change against the champion (absolute, or
  relative to the champion's value), its own direction, and may apply to every slice of a
  column: the evaluate step reports slices as flat keys `metric@column=value`
  (`accuracy@segment=neg`). The verdict has one line per check (per slice) with its numbers,
  `passed ...` or `failed ...`, whatever the outcome, so a candidate that lifts the headline
  metric but drops a slice past its tolerance is rejected with both lines in view.
- `max_latency_p95_ms` (either shape): the candidate's predict latency p95 as the evaluate step
  measured it must be under the bar (TFX's InfraValidator idea); not reported = rejected.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, Mapping

# Float noise must not flip a decision: 0.71 - 0.70 is 0.00999... and still "improves by 0.01".
_ABS_TOL = 1e-12


SLICE_SEP = "@"    # accuracy@segment=neg: the metric on the rows whose segment is "neg"


@dataclass(frozen=True)
class Check:
    """One metric's bar and change vs the champion; `slice` = applied to every slice of that column."""
    metric: str
    min_value: float | None = None          # a floor (higher) or a ceiling (lower); None = no bar
    min_change: float | None = None         # better-direction change vs the champion; None = not compared
    change: Literal["absolute", "relative"] = "absolute"   # relative = change / |champion value|
    direction: Literal["higher", "lower"] = "higher"
    slice: str | None = None

    def __post_init__(self) -> None:
        if not self.metric or SLICE_SEP in self.metric:
            raise ValueError(f"a check needs a metric name without {SLICE_SEP!r}, got {self.metric!r}")
        for name in ("min_value", "min_change"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite or None, got {value}")
        if self.change not in ("absolute", "relative"):
            raise ValueError(f"change must be 'absolute' or 'relative', got {self.change!r}")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.slice is not None and (not self.slice or "=" in self.slice or SLICE_SEP in self.slice):
            raise ValueError(f"a slice is a column name without '=' or {SLICE_SEP!r}, got {self.slice!r}")

    @property
    def name(self) -> str:
        return self.metric if self.slice is None else f"{self.metric}{SLICE_SEP}{self.slice}=*"


@dataclass(frozen=True)
class Gate:
    metric: str = "accuracy"
    # The absolute bar in the metric's direction: a floor when higher is better, a ceiling
    # when lower is better. None = no bar (a fixed 0.0 default would reject every loss > 0).
    min_value: float | None = None
    min_improvement: float = 0.0      # better-direction gain over the champion required
    higher_is_better: bool = True
    checks: tuple[Check, ...] = ()    # set: these replace the four fields above
    max_latency_p95_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("gate needs a metric name")
        if not math.isfinite(self.min_improvement):
            raise ValueError(f"min_improvement must be finite, got {self.min_improvement}")
        if self.min_value is not None and not math.isfinite(self.min_value):
            raise ValueError(f"min_value must be finite or None, got {self.min_value}")
        if self.max_latency_p95_ms is not None and not (
                math.isfinite(self.max_latency_p95_ms) and self.max_latency_p95_ms > 0):
            raise ValueError(f"max_latency_p95_ms must be a positive number, got {self.max_latency_p95_ms}")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"a metric (and slice) may have one check only, got {names}")

    @property
    def headline(self) -> str:
        """The metric the verdict is filed under: the first check's, or the single metric."""
        return self.checks[0].metric if self.checks else self.metric


@dataclass(frozen=True)
class Scores:
    version: str
    metrics: Mapping[str, float | None]
    latency_ms_p95: float | None = None     # the candidate's predict latency, for the infra check


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
    if gate.checks:
        return _decide_checks(candidate, champion, gate)
    value, problem = _usable(candidate.metrics, gate.metric)
    if value is None:
        return Reject(candidate.version, (f"candidate v{candidate.version} {problem}",)
                      + _failed_latency(candidate, gate))

    passed: list[str] = []
    failed: list[str] = []
    ok, text = _check_bar(value, gate)
    (passed if ok else failed).append(text)
    ok, text = _check_champion(value, champion, gate)
    (passed if ok else failed).append(text)
    if gate.max_latency_p95_ms is not None:
        ok, text = _check_latency(candidate, gate.max_latency_p95_ms)
        (passed if ok else failed).append(text)
    if failed:
        return Reject(candidate.version, tuple(failed))
    return Promote(candidate.version, tuple(passed))


def _failed_latency(candidate: Scores, gate: Gate) -> tuple[str, ...]:
    if gate.max_latency_p95_ms is None:
        return ()
    ok, text = _check_latency(candidate, gate.max_latency_p95_ms)
    return () if ok else (text,)


# --- the gate with checks ---------------------------------------------------------------------

def _decide_checks(candidate: Scores, champion: Scores | None, gate: Gate) -> Promote | Reject:
    """One line per check (per slice), every one of them in the verdict, passed or failed."""
    results: list[tuple[bool, str]] = []
    for check in gate.checks:
        keys = _keys(candidate.metrics, check)
        if not keys:
            results.append((False, f"failed {check.name}: candidate v{candidate.version} reports no "
                                   f"{check.name} (missing)"))
        for key in keys:
            results.append(_run_check(key, check, candidate, champion))
    if gate.max_latency_p95_ms is not None:
        ok, text = _check_latency(candidate, gate.max_latency_p95_ms)
        results.append((ok, f"{'passed' if ok else 'failed'} {text}"))
    lines = tuple(text for _, text in results)
    if all(ok for ok, _ in results):
        return Promote(candidate.version, lines)
    return Reject(candidate.version, lines)


def _keys(metrics: Mapping[str, object], check: Check) -> list[str]:
    """The metric keys a check judges: its metric, or every `metric@slice=value` reported."""
    if check.slice is None:
        return [check.metric]
    prefix = f"{check.metric}{SLICE_SEP}{check.slice}="
    return sorted(k for k in metrics if isinstance(k, str) and k.startswith(prefix) and len(k) > len(prefix))


def _run_check(key: str, check: Check, candidate: Scores, champion: Scores | None) -> tuple[bool, str]:
    value, problem = _usable(candidate.metrics, key)
    if value is None:
        return False, f"failed {key}: candidate v{candidate.version} {problem}"
    higher = check.direction == "higher"
    parts: list[str] = []
    ok = True
    if check.min_value is None:
        parts.append(f"{_fmt(value)} (no bar)")
    else:
        good = _close(value, check.min_value) or (value >= check.min_value if higher else value <= check.min_value)
        ok &= good
        op = (">=" if good else "<") if higher else ("<=" if good else ">")
        parts.append(f"{_fmt(value)} {op} {_fmt(check.min_value)}")
    if check.min_change is not None:
        good, text = _check_change(key, value, check, champion)
        ok &= good
        parts.append(text)
    return ok, f"{'passed' if ok else 'failed'} {key}: {'; '.join(parts)}"


def _check_change(key: str, value: float, check: Check, champion: Scores | None) -> tuple[bool, str]:
    assert check.min_change is not None
    if champion is None:
        return True, "no champion yet"
    best, problem = _usable(champion.metrics, key)
    if best is None:
        return False, f"champion v{champion.version} {problem}; cannot compare"   # fails closed
    gain = value - best if check.direction == "higher" else best - value
    lower = ", lower is better" if check.direction == "lower" else ""
    if check.change == "relative":
        if best == 0:
            return False, (f"champion v{champion.version} has {key} 0; a relative change from 0 "
                           "is undefined")
        gain = gain / abs(best)
        shown, needed = _pct(gain), _pct(check.min_change)
    else:
        shown, needed = _fmt(gain, sign=True), _fmt(check.min_change, sign=True)
    ok = gain >= check.min_change or _close(gain, check.min_change)
    return ok, (f"{shown} vs v{champion.version} ({_fmt(best)}), needs >= {needed} "
                f"({check.change}{lower})")


def _check_latency(candidate: Scores, bar_ms: float) -> tuple[bool, str]:
    value, problem = _usable({"latency": candidate.latency_ms_p95}, "latency")
    if value is None:
        return False, (f"predict latency p95: candidate v{candidate.version} reported none "
                       f"{problem.removeprefix('has no usable latency ')}, bar {_fmt(bar_ms)} ms")
    ok = value <= bar_ms or _close(value, bar_ms)
    return ok, f"predict latency p95 {_fmt(value)} ms {'<=' if ok else '>'} {_fmt(bar_ms)} ms"


# --- the single-metric gate ---------------------------------------------------------------------

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


def _pct(x: float) -> str:
    return f"{x * 100:+.4g}%"


def _fmt(x: float, sign: bool = False) -> str:
    return f"{x:+.4g}" if sign else f"{x:.4g}"
