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
