"""The promotion gate, one check per table row: exact decision, exact reasons with numbers."""

from __future__ import annotations

from typing import Any

import pytest

from agents.policies import Gate, Promote, Reject, Scores, decide_promotion

ACC = Gate(metric="accuracy", min_value=0.7, min_improvement=0.01)
RMSE = Gate(metric="rmse", min_value=0.5, min_improvement=0.01, higher_is_better=False)


def s(version: str, **metrics: Any) -> Scores:
    return Scores(version=version, metrics=metrics)


NO_CHAMPION = [
    pytest.param(s("1", accuracy=0.91), None, ACC,
                 Promote("1", ("accuracy 0.91 >= 0.7", "no champion yet")),
                 id="first-model-over-the-bar-is-promoted"),
    pytest.param(s("1", accuracy=0.6), None, ACC, Reject("1", ("accuracy 0.6 < 0.7",)),
                 id="first-model-under-the-bar-is-rejected"),
    pytest.param(s("1", accuracy=0.7), None, ACC, Promote("1", ("accuracy 0.7 >= 0.7", "no champion yet")),
                 id="exactly-on-the-bar-passes"),
    pytest.param(s("1", accuracy=0.12), None, Gate(), Promote("1", ("accuracy 0.12 (no absolute bar)", "no champion yet")),
                 id="default-gate-has-no-bar"),
    pytest.param(s("1", accuracy=1), None, ACC, Promote("1", ("accuracy 1 >= 0.7", "no champion yet")),
                 id="integer-metric-is-a-number"),
]

WITH_CHAMPION = [
    pytest.param(s("3", accuracy=0.91), s("2", accuracy=0.79), ACC,
                 Promote("3", ("accuracy 0.91 >= 0.7", "improves on v2 by +0.12 (>= 0.01)")),
                 id="improves-enough"),
    pytest.param(s("3", accuracy=0.57), s("2", accuracy=0.56), Gate(min_improvement=0.01),
                 Promote("3", ("accuracy 0.57 (no absolute bar)", "improves on v2 by +0.01 (>= 0.01)")),
                 id="float-noise-does-not-fail-an-exact-improvement"),
    pytest.param(s("3", accuracy=0.8), s("2", accuracy=0.795), ACC,
                 Reject("3", ("does not improve enough on v2: accuracy 0.8 vs 0.795 is +0.005, needs >= 0.01",)),
                 id="improvement-too-small"),
    pytest.param(s("3", accuracy=0.65), s("2", accuracy=0.75), ACC,
                 Reject("3", ("accuracy 0.65 < 0.7",
                              "does not improve enough on v2: accuracy 0.65 vs 0.75 is -0.1, needs >= 0.01")),
                 id="every-failed-check-is-listed"),
    pytest.param(s("3", accuracy=0.8), s("2", accuracy=0.8), Gate(), Promote("3", (
                 "accuracy 0.8 (no absolute bar)", "improves on v2 by +0 (>= 0)")),
                 id="tie-passes-when-no-improvement-is-required"),
    pytest.param(s("3", accuracy=0.79), s("2", accuracy=0.8), Gate(min_improvement=-0.02),
                 Promote("3", ("accuracy 0.79 (no absolute bar)", "improves on v2 by -0.01 (>= -0.02)")),
                 id="negative-improvement-tolerates-small-regression"),
    pytest.param(s("2", accuracy=0.99), s("2", accuracy=0.8), ACC, Reject("2", ("v2 is already champion",)),
                 id="candidate-is-already-champion"),
]

LOWER_IS_BETTER = [
    pytest.param(s("3", rmse=0.3), s("2", rmse=0.35), RMSE,
                 Promote("3", ("rmse 0.3 <= 0.5", "improves on v2 by +0.05 (>= 0.01)")),
                 id="lower-rmse-improves"),
    pytest.param(s("3", rmse=0.4), s("2", rmse=0.35), RMSE,
                 Reject("3", ("does not improve enough on v2: rmse 0.4 vs 0.35 is -0.05, needs >= 0.01, "
                              "lower rmse is better",)),
                 id="higher-rmse-is-worse"),
    pytest.param(s("1", rmse=0.6), None, RMSE, Reject("1", ("rmse 0.6 > 0.5",)),
                 id="bar-is-a-ceiling-when-lower-is-better"),
    pytest.param(s("1", rmse=3.2), None, Gate(metric="rmse", higher_is_better=False),
                 Promote("1", ("rmse 3.2 (no absolute bar)", "no champion yet")),
                 id="default-gate-does-not-reject-every-loss"),
]

UNUSABLE = [
    pytest.param(s("3"), s("2", accuracy=0.8), ACC, Reject("3", ("candidate v3 has no usable accuracy (missing)",)),
                 id="candidate-metric-missing"),
    pytest.param(s("3", accuracy=None), None, ACC, Reject("3", ("candidate v3 has no usable accuracy (missing)",)),
                 id="candidate-metric-null"),
    pytest.param(s("3", accuracy=float("nan")), None, ACC, Reject("3", ("candidate v3 has no usable accuracy (nan)",)),
                 id="candidate-metric-nan"),
    pytest.param(s("3", accuracy=float("inf")), None, ACC, Reject("3", ("candidate v3 has no usable accuracy (inf)",)),
                 id="candidate-metric-inf"),
    pytest.param(s("3", rmse=float("-inf")), None, RMSE, Reject("3", ("candidate v3 has no usable rmse (-inf)",)),
                 id="candidate-minus-inf-is-not-a-perfect-loss"),
    pytest.param(s("3", accuracy="0.9"), None, ACC,
                 Reject("3", ("candidate v3 has no usable accuracy (not a number: '0.9')",)),
                 id="candidate-metric-string"),
    pytest.param(s("3", accuracy=True), None, ACC,
                 Reject("3", ("candidate v3 has no usable accuracy (not a number: True)",)),
                 id="candidate-metric-bool"),
    pytest.param(s("3", accuracy=0.9), s("2", f1=0.8), ACC,
                 Reject("3", ("champion v2 has no usable accuracy (missing); cannot compare",)),
                 id="champion-metric-missing-fails-closed"),
    pytest.param(s("3", accuracy=0.9), s("2", accuracy=float("nan")), ACC,
                 Reject("3", ("champion v2 has no usable accuracy (nan); cannot compare",)),
                 id="champion-metric-nan-fails-closed"),
    pytest.param(s("3", accuracy=0.6), s("2", accuracy=None), ACC,
                 Reject("3", ("accuracy 0.6 < 0.7", "champion v2 has no usable accuracy (missing); cannot compare")),
                 id="unusable-champion-and-low-candidate-both-reported"),
]


@pytest.mark.parametrize("candidate, champion, gate, expected",
                         NO_CHAMPION + WITH_CHAMPION + LOWER_IS_BETTER + UNUSABLE)
def test_decide_promotion(candidate: Scores, champion: Scores | None, gate: Gate,
                          expected: Promote | Reject) -> None:
    assert decide_promotion(candidate, champion, gate) == expected


@pytest.mark.parametrize("kwargs", [
    pytest.param({"metric": ""}, id="no-metric-name"),
    pytest.param({"min_improvement": float("nan")}, id="nan-improvement"),
    pytest.param({"min_improvement": float("inf")}, id="infinite-improvement"),
    pytest.param({"min_value": float("nan")}, id="nan-bar"),
])
def test_gate_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Gate(**kwargs)


# --- gates with several checks, slices and latency --------------------------------------------

from agents.policy.promotion import Check  # noqa: E402

ACC_CHECK = Check("accuracy", min_value=0.7, min_change=0.01)
SLICES = Check("accuracy", min_value=0.6, min_change=-0.02, slice="segment")
MULTI = Gate(checks=(ACC_CHECK, SLICES))
REL = Gate(checks=(Check("f1", min_change=0.05, change="relative"),))
LOSS = Gate(checks=(Check("rmse", min_value=0.5, min_change=0.01, direction="lower"),))
FAST = Gate(checks=(Check("accuracy", min_value=0.7),), max_latency_p95_ms=50)


def sl(version: str, latency: float | None = None, **metrics: Any) -> Scores:
    """Scores whose `seg_a=0.9` keyword means the slice metric `accuracy@segment=a`."""
    flat = {(f"accuracy@segment={k[4:]}" if k.startswith("seg_") else k): v for k, v in metrics.items()}
    return Scores(version=version, metrics=flat, latency_ms_p95=latency)


MULTI_METRIC = [
    pytest.param(sl("1", accuracy=0.9, seg_a=0.85, seg_b=0.95), None, MULTI, Promote("1", (
        "passed accuracy: 0.9 >= 0.7; no champion yet",
        "passed accuracy@segment=a: 0.85 >= 0.6; no champion yet",
        "passed accuracy@segment=b: 0.95 >= 0.6; no champion yet")),
        id="first-model-every-check-and-slice-listed"),
    pytest.param(sl("3", accuracy=0.91, seg_a=0.9, seg_b=0.92), sl("2", accuracy=0.8, seg_a=0.8, seg_b=0.8),
                 MULTI, Promote("3", (
                     "passed accuracy: 0.91 >= 0.7; +0.11 vs v2 (0.8), needs >= +0.01 (absolute)",
                     "passed accuracy@segment=a: 0.9 >= 0.6; +0.1 vs v2 (0.8), needs >= -0.02 (absolute)",
                     "passed accuracy@segment=b: 0.92 >= 0.6; +0.12 vs v2 (0.8), needs >= -0.02 (absolute)")),
                 id="improves-everywhere"),
    pytest.param(sl("3", accuracy=0.9, seg_a=0.99, seg_b=0.7), sl("2", accuracy=0.8, seg_a=0.75, seg_b=0.8),
                 MULTI, Reject("3", (
                     "passed accuracy: 0.9 >= 0.7; +0.1 vs v2 (0.8), needs >= +0.01 (absolute)",
                     "passed accuracy@segment=a: 0.99 >= 0.6; +0.24 vs v2 (0.75), needs >= -0.02 (absolute)",
                     "failed accuracy@segment=b: 0.7 >= 0.6; -0.1 vs v2 (0.8), needs >= -0.02 (absolute)")),
                 id="slice-regression-rejected-while-the-headline-improves"),
    pytest.param(sl("3", accuracy=0.9, seg_a=0.79, seg_b=0.8), sl("2", accuracy=0.8, seg_a=0.8, seg_b=0.8),
                 MULTI, Promote("3", (
                     "passed accuracy: 0.9 >= 0.7; +0.1 vs v2 (0.8), needs >= +0.01 (absolute)",
                     "passed accuracy@segment=a: 0.79 >= 0.6; -0.01 vs v2 (0.8), needs >= -0.02 (absolute)",
                     "passed accuracy@segment=b: 0.8 >= 0.6; +0 vs v2 (0.8), needs >= -0.02 (absolute)")),
                 id="slice-drop-within-tolerance-passes"),
    pytest.param(sl("1", accuracy=0.9, seg_a=0.5), None, MULTI, Reject("1", (
        "passed accuracy: 0.9 >= 0.7; no champion yet",
        "failed accuracy@segment=a: 0.5 < 0.6; no champion yet")),
        id="slice-under-its-absolute-bar"),
    pytest.param(sl("3", accuracy=0.805, seg_a=0.8), sl("2", accuracy=0.8, seg_a=0.8), MULTI, Reject("3", (
        "failed accuracy: 0.805 >= 0.7; +0.005 vs v2 (0.8), needs >= +0.01 (absolute)",
        "passed accuracy@segment=a: 0.8 >= 0.6; +0 vs v2 (0.8), needs >= -0.02 (absolute)")),
        id="absolute-change-too-small"),
    pytest.param(sl("3", f1=0.84), sl("2", f1=0.8), REL, Promote("3", (
        "passed f1: 0.84 (no bar); +5% vs v2 (0.8), needs >= +5% (relative)",)),
        id="relative-change-exactly-enough"),
    pytest.param(sl("3", f1=0.82), sl("2", f1=0.8), REL, Reject("3", (
        "failed f1: 0.82 (no bar); +2.5% vs v2 (0.8), needs >= +5% (relative)",)),
        id="relative-change-too-small"),
    pytest.param(sl("3", f1=0.1), sl("2", f1=0.0), REL, Reject("3", (
        "failed f1: 0.1 (no bar); champion v2 has f1 0; a relative change from 0 is undefined",)),
        id="relative-change-from-zero-fails-closed"),
    pytest.param(sl("3", rmse=0.3), sl("2", rmse=0.35), LOSS, Promote("3", (
        "passed rmse: 0.3 <= 0.5; +0.05 vs v2 (0.35), needs >= +0.01 (absolute, lower is better)",)),
        id="lower-is-better-improves"),
    pytest.param(sl("3", rmse=0.6), sl("2", rmse=0.55), LOSS, Reject("3", (
        "failed rmse: 0.6 > 0.5; -0.05 vs v2 (0.55), needs >= +0.01 (absolute, lower is better)",)),
        id="lower-is-better-over-its-ceiling-and-worse"),
    pytest.param(sl("3", seg_a=0.9), sl("2", accuracy=0.8, seg_a=0.8), MULTI, Reject("3", (
        "failed accuracy: candidate v3 has no usable accuracy (missing)",
        "passed accuracy@segment=a: 0.9 >= 0.6; +0.1 vs v2 (0.8), needs >= -0.02 (absolute)")),
        id="missing-metric"),
    pytest.param(sl("3", accuracy=0.9), None, MULTI, Reject("3", (
        "passed accuracy: 0.9 >= 0.7; no champion yet",
        "failed accuracy@segment=*: candidate v3 reports no accuracy@segment=* (missing)")),
        id="no-slice-reported"),
    pytest.param(sl("3", accuracy=0.9, seg_a=float("nan")), None, MULTI, Reject("3", (
        "passed accuracy: 0.9 >= 0.7; no champion yet",
        "failed accuracy@segment=a: candidate v3 has no usable accuracy@segment=a (nan)")),
        id="nan-slice"),
    pytest.param(sl("3", accuracy=0.9, seg_a=0.9), sl("2", accuracy=0.8), MULTI, Reject("3", (
        "passed accuracy: 0.9 >= 0.7; +0.1 vs v2 (0.8), needs >= +0.01 (absolute)",
        "failed accuracy@segment=a: 0.9 >= 0.6; champion v2 has no usable accuracy@segment=a (missing); "
        "cannot compare")),
        id="missing-champion-slice-fails-closed"),
    pytest.param(sl("3", accuracy=0.9), sl("2"), Gate(checks=(ACC_CHECK,)), Reject("3", (
        "failed accuracy: 0.9 >= 0.7; champion v2 has no usable accuracy (missing); cannot compare",)),
        id="missing-champion-metric-fails-closed"),
    pytest.param(sl("3", accuracy=0.9), sl("2"), Gate(checks=(Check("accuracy", min_value=0.7),)),
                 Promote("3", ("passed accuracy: 0.9 >= 0.7",)),
                 id="a-check-without-min-change-ignores-the-champion"),
    pytest.param(sl("1", latency=12.5, accuracy=0.9), None, FAST, Promote("1", (
        "passed accuracy: 0.9 >= 0.7", "passed predict latency p95 12.5 ms <= 50 ms")),
        id="latency-under-the-bar"),
    pytest.param(sl("1", latency=80, accuracy=0.9), None, FAST, Reject("1", (
        "passed accuracy: 0.9 >= 0.7", "failed predict latency p95 80 ms > 50 ms")),
        id="latency-over-the-bar"),
    pytest.param(sl("1", accuracy=0.9), None, FAST, Reject("1", (
        "passed accuracy: 0.9 >= 0.7",
        "failed predict latency p95: candidate v1 reported none (missing), bar 50 ms")),
        id="latency-not-reported-fails-closed"),
    pytest.param(sl("1", latency=80, accuracy=0.9), None, Gate(min_value=0.7, max_latency_p95_ms=50),
                 Reject("1", ("predict latency p95 80 ms > 50 ms",)),
                 id="latency-on-the-single-metric-gate"),
    pytest.param(sl("1", latency=20, accuracy=0.9), None, Gate(min_value=0.7, max_latency_p95_ms=50),
                 Promote("1", ("accuracy 0.9 >= 0.7", "no champion yet", "predict latency p95 20 ms <= 50 ms")),
                 id="latency-passes-on-the-single-metric-gate"),
    pytest.param(sl("2", accuracy=0.9), sl("2", accuracy=0.9), MULTI, Reject("2", ("v2 is already champion",)),
                 id="already-champion"),
]


@pytest.mark.parametrize("candidate, champion, gate, expected", MULTI_METRIC)
def test_decide_promotion_with_checks(candidate: Scores, champion: Scores | None, gate: Gate,
                                      expected: Promote | Reject) -> None:
    assert decide_promotion(candidate, champion, gate) == expected


@pytest.mark.parametrize("make", [
    pytest.param(lambda: Check(""), id="no-metric"),
    pytest.param(lambda: Check("accuracy@segment=a"), id="slice-spelled-in-the-metric"),
    pytest.param(lambda: Check("accuracy", min_change=float("nan")), id="nan-change"),
    pytest.param(lambda: Check("accuracy", min_value=float("inf")), id="infinite-bar"),
    pytest.param(lambda: Check("accuracy", change="percent"), id="unknown-change"),
    pytest.param(lambda: Check("accuracy", direction="up"), id="unknown-direction"),
    pytest.param(lambda: Check("accuracy", slice="segment=a"), id="slice-with-a-value"),
    pytest.param(lambda: Gate(checks=(Check("accuracy"), Check("accuracy", min_value=0.5))), id="duplicate-check"),
    pytest.param(lambda: Gate(max_latency_p95_ms=0), id="zero-latency-bar"),
])
def test_checks_reject_nonsense(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_headline_is_the_first_check() -> None:
    assert (MULTI.headline, ACC.headline, LOSS.headline) == ("accuracy", "accuracy", "rmse")
