"""Online metric windows and the metric guard, one rule per table row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from agents.policies import GuardState, MetricPolicy, Retrain, Rollback, Skip, Window
from agents.policies import decide_on_metric, on_deployment
from agents.policy.metric import Counts, VersionScore, closable, fold, score, window_bounds

P = MetricPolicy(floor=0.8, window_seconds=10, min_count=20, rollback_guard_seconds=300)
NO_GUARD = replace(P, rollback_guard_seconds=0.0)
NOW = 1_000.0


def w(value: float, version: str = "3", count: int = 50, n: int = 1) -> Window:
    return Window(f"worker#window-{n}", version, 980.0, 990.0, count, value)


FRESH = GuardState(champion="3", deployed_at=NOW - 60, previous="2",
                   scores=(VersionScore("2", 200, 180.0),))          # v2 scored 0.9 online
OLD = replace(FRESH, deployed_at=NOW - 3600)


@dataclass(frozen=True)
class Case:
    state: GuardState
    window: Window
    expect: type
    after: dict[str, Any] = field(default_factory=dict)
    policy: MetricPolicy = P


CASES = [
    pytest.param(Case(FRESH, w(0.95), Skip), id="above-floor-nothing"),
    pytest.param(Case(FRESH, w(0.80), Skip), id="at-the-floor-is-fine"),
    pytest.param(Case(FRESH, w(0.1, count=5), Skip, {"below_floor": 0}), id="too-few-predictions"),
    pytest.param(Case(FRESH, w(0.1, version="2"), Skip), id="not-the-champion-is-recorded-only"),
    pytest.param(Case(OLD, w(0.5), Retrain, {"below_floor": 1}), id="old-deployment-retrains"),
    pytest.param(Case(FRESH, w(0.5), Rollback, {"rollback_requested": "3"}),
                 id="fresh-deployment-and-better-previous-rolls-back"),
    pytest.param(Case(replace(FRESH, scores=(VersionScore("2", 200, 80.0),)), w(0.5), Retrain),
                 id="previous-scored-worse-retrains"),
    pytest.param(Case(replace(FRESH, scores=()), w(0.5), Retrain),
                 id="previous-never-scored-no-evidence-retrains"),
    pytest.param(Case(replace(FRESH, scores=(VersionScore("2", 5, 5.0),)), w(0.5), Retrain),
                 id="previous-score-on-too-few-predictions-retrains"),
    pytest.param(Case(replace(FRESH, previous=None), w(0.5), Retrain), id="first-champion-retrains"),
    pytest.param(Case(FRESH, w(0.5), Retrain, policy=NO_GUARD), id="guard-off-always-retrains"),
    pytest.param(Case(replace(FRESH, rollback_requested="3"), w(0.5), Skip, {"suppressed": 1}),
                 id="second-bad-window-after-a-rollback-request-is-suppressed"),
    pytest.param(Case(GuardState(), w(0.5), Retrain), id="unknown-champion-retrains"),
    pytest.param(Case(replace(FRESH, seen=("worker#window-1",)), w(0.1), Skip, {"below_floor": 0}),
                 id="redelivered-window-is-a-duplicate"),
]


@pytest.mark.parametrize("case", CASES)
def test_decide_on_metric(case: Case):
    new, decision = decide_on_metric(case.window, case.state, case.policy, NOW)
    assert isinstance(decision, case.expect), decision
    for name, value in case.after.items():
        assert getattr(new, name) == value, name
    if isinstance(decision, Rollback):
        assert (decision.to, decision.from_version) == ("2", "3")
        assert "v2 scored 0.9" in decision.reason
    if case.window.event_key not in case.state.seen:
        assert new.score_of(case.window.model_version).count >= case.window.count


def test_lower_is_better_metrics_use_the_floor_as_a_ceiling():
    mae = MetricPolicy(metric="mae", floor=1.0, min_count=1, rollback_guard_seconds=300)
    state = replace(FRESH, scores=(VersionScore("2", 100, 50.0),))        # v2 mae 0.5
    assert isinstance(decide_on_metric(w(0.7), state, mae, NOW)[1], Skip)
    _, decision = decide_on_metric(w(2.0), state, mae, NOW)
    assert isinstance(decision, Rollback)


def test_scores_accumulate_per_version_weighted_by_count():
    state = GuardState(champion="3")
    state, _ = decide_on_metric(w(1.0, count=30, n=1), state, P, NOW)
    state, _ = decide_on_metric(w(0.0, count=10, n=2), state, P, NOW)
    assert state.score_of("3").value == pytest.approx(0.75) and state.score_of("3").count == 40


def test_deployments_move_the_guard():
    state = on_deployment(GuardState(), "2", None, 100.0)
    assert (state.champion, state.previous, state.deployed_at) == ("2", None, 100.0)
    state = on_deployment(state, "3", "2", 200.0)
    assert (state.champion, state.previous, state.deployed_at) == ("3", "2", 200.0)
    assert on_deployment(state, "3", "2", 999.0) == state          # redelivery keeps the clock
    state = on_deployment(replace(state, rollback_requested="3"), "2", "3", 300.0, rolled_back=True)
    assert (state.champion, state.previous, state.rollback_requested) == ("2", None, None)


def test_guard_state_survives_a_json_round_trip():
    state, _ = decide_on_metric(w(0.5), FRESH, P, NOW)
    assert GuardState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# -- window math --------------------------------------------------------------------------------

@pytest.mark.parametrize("metric, prediction, label, expected", [
    ("accuracy", 1, 1, 1.0), ("accuracy", 1, 0, 0.0), ("accuracy", 1, 1.0, 1.0),
    ("accuracy", "cat", "cat", 1.0), ("accuracy", True, 1, 1.0), ("error_rate", 0, 1, 1.0),
    ("mae", 2.0, 3.5, 1.5), ("mse", 2.0, 3.5, 2.25),
])
def test_score(metric, prediction, label, expected):
    assert score(metric, prediction, label) == pytest.approx(expected)


def test_window_bounds_are_epoch_aligned_and_half_open():
    assert window_bounds(1_000.0, 60) == (960.0, 1_020.0)
    assert window_bounds(1_020.0, 60) == (1_020.0, 1_080.0)
    assert window_bounds(1_019.999, 60) == (960.0, 1_020.0)


def test_fold_groups_a_batch_by_version_and_window():
    items = [("1", 5.0, 1.0), ("1", 9.9, 0.0), ("1", 10.0, 1.0), ("2", 3.0, 1.0), ("1", 1.0, 1.0)]
    assert fold(items, 10) == {("1", 0.0): Counts(3, 2.0), ("1", 10.0): Counts(1, 1.0),
                               ("2", 0.0): Counts(1, 1.0)}
    assert Counts(3, 2.0).add(Counts(1, 1.0)) == Counts(4, 3.0)
    assert Counts(4, 3.0).value == 0.75 and Counts().value is None


def test_fold_of_parts_equals_fold_of_the_whole():
    items = [(str(i % 3), float(i) * 0.7, float(i % 2)) for i in range(500)]
    whole = fold(items, 30)
    parts: dict = {}
    for chunk in (items[:123], items[123:400], items[400:]):
        for key, counts in fold(chunk, 30).items():
            parts[key] = parts.get(key, Counts()).add(counts)
    assert parts == whole


def test_windows_close_after_their_end_plus_grace():
    assert not closable(960.0, 60, 2.0, 1_021.9)
    assert closable(960.0, 60, 2.0, 1_022.0)


@pytest.mark.parametrize("kwargs", [{"metric": "auc"}, {"window_seconds": 0}, {"window_seconds": 2.5},
                                    {"min_count": 0}, {"rollback_guard_seconds": -1},
                                    {"floor": float("nan")}])
def test_invalid_metric_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        MetricPolicy(**{"floor": 0.8, **kwargs})
