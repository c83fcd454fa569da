"""Drift signals under the retrain reducer (no storms), and the drift policy's own rules.

The burst rule (agents/policy/retrain.py module doc): a drift or metric signal that arrives while
a training is in flight or the cooldown runs is suppressed (counted, its key kept) and queued;
the queued follow-up goes out only if new data arrived since the last request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.policies import (
    Batch,
    ColumnDrift,
    DataArrived,
    DriftDetected,
    DriftPolicy,
    MetricDegraded,
    ModelState,
    PredictionBuffer,
    RetrainPolicy,
    Signal,
    Skip,
    Tick,
    TrainingFinished,
    TrainRequest,
    decide_drift,
    decide_retrain,
)

COOL = RetrainPolicy(min_new_rows=10_000, cooldown_seconds=600.0)


def drift(n: int) -> DriftDetected:
    return DriftDetected(f"monitor#drift-{n}", 0.5)


def data(n: int, rows: int = 500) -> DataArrived:
    return DataArrived(f"lake#d{n}", Batch(f"file:///lake/{n}.parquet", f"v{n}", rows, f"lake#d{n}"))


def run(signals: list[tuple[float, Signal]], policy: RetrainPolicy = COOL,
        state: ModelState | None = None) -> tuple[ModelState, list[TrainRequest], list[Skip]]:
    state = state or ModelState()
    requests, skips = [], []
    for now, signal in signals:
        if isinstance(signal, str) and signal == "finish":
            signal = TrainingFinished(f"watch#{now}", state.in_flight, True)
        state, decision = decide_retrain(state, signal, policy, now)
        (requests if isinstance(decision, TrainRequest) else skips).append(decision)
    return state, requests, skips


# -- Must show: 20 drift events inside one cooldown -> exactly one request, 19 suppressed ------

def test_twenty_drift_events_inside_one_cooldown_make_one_request_and_nineteen_suppressed():
    burst = [(float(i), drift(i)) for i in range(20)]
    later = [(30.0, "finish")] + [(t, Tick(f"clock#{t}")) for t in (300.0, 601.0, 900.0, 5000.0)]
    state, requests, _ = run(burst + later)

    assert len(requests) == 1
    assert requests[0].reason == "drift" and requests[0].causes == ("monitor#drift-0",)
    assert state.suppressed == 19
    assert state.suppressed_keys == tuple(f"monitor#drift-{i}" for i in range(1, 20))
    assert state.pending == () and state.in_flight is None


def test_a_burst_after_the_training_ended_but_inside_the_cooldown_is_also_one_request():
    # The first drift trains at t=0, the training ends at t=5, then 19 more drift events.
    signals = [(0.0, drift(0)), (5.0, "finish")] + [(10.0 + i, drift(i + 1)) for i in range(19)]
    signals += [(t, Tick(f"clock#{t}")) for t in (100.0, 650.0, 2000.0)]
    state, requests, skips = run(signals)
    assert len(requests) == 1 and state.suppressed == 19
    assert any("drift follow-up dropped: no new data" in s.reason for s in skips)


def test_burst_with_the_same_event_redelivered_counts_it_once():
    signals = [(0.0, drift(0))] + [(1.0 + i, drift(1)) for i in range(5)]
    state, requests, skips = run(signals)
    assert len(requests) == 1 and state.suppressed == 1
    assert sum(s.reason.startswith("duplicate") for s in skips) == 4


@dataclass(frozen=True)
class Case:
    signals: list
    requests: list[str]                     # reasons of the requests, in order
    suppressed: int
    after: dict[str, Any] = field(default_factory=dict)
    policy: RetrainPolicy = COOL


CASES = [
    pytest.param(Case([(0.0, drift(0))], ["drift"], 0, {"in_flight": "*"}), id="first-drift-fires"),
    pytest.param(Case([(0.0, drift(0)), (1.0, drift(1)), (2.0, "finish"), (700.0, Tick("c"))],
                      ["drift"], 1, {"pending": ()}), id="drift-in-flight-coalesced-no-new-data"),
    pytest.param(Case([(0.0, drift(0)), (1.0, data(1)), (2.0, drift(1)), (3.0, "finish"),
                       (100.0, Tick("c1")), (601.0, Tick("c2"))],
                      ["drift", "followup:drift"], 1, {"new_rows": 0}),
                 id="drift-with-new-data-follows-up-after-the-cooldown"),
    pytest.param(Case([(0.0, MetricDegraded("w#1", "accuracy 0.4 < 0.8")),
                       (1.0, MetricDegraded("w#2")), (2.0, drift(3)), (3.0, "finish"),
                       (700.0, Tick("c"))], ["metric"], 2, {"pending": ()}),
                 id="metric-and-drift-share-one-request"),
    pytest.param(Case([(0.0, drift(0)), (1.0, "finish"), (2.0, drift(1))], ["drift", "drift"], 0,
                      policy=RetrainPolicy(min_new_rows=10_000, cooldown_seconds=0.0)),
                 id="no-cooldown-a-new-drift-after-the-training-fires-again"),
    pytest.param(Case([(0.0, DriftDetected("m#1", 0.05))], [], 0,
                      policy=RetrainPolicy(min_new_rows=10_000, min_drift_share=0.2)),
                 id="drift-share-under-min-is-ignored"),
    pytest.param(Case([(0.0, data(0, 20_000)), (1.0, drift(1)), (2.0, "finish"), (3.0, Tick("c"))],
                      ["data"], 1, {"pending": ()}, RetrainPolicy(min_new_rows=1000, cooldown_seconds=0.0)),
                 id="drift-during-a-data-training-is-coalesced-into-it"),
]


@pytest.mark.parametrize("case", CASES)
def test_signal_coalescing(case: Case):
    state, requests, _ = run(case.signals, case.policy)
    assert [r.reason for r in requests] == case.requests
    assert state.suppressed == case.suppressed
    for name, value in case.after.items():
        if value == "*":
            assert getattr(state, name)
        else:
            assert getattr(state, name) == value, name


def test_state_with_suppressed_keys_survives_a_json_round_trip():
    import json

    state, _, _ = run([(0.0, drift(0)), (1.0, drift(1))])
    again = ModelState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state and again.suppressed_keys == ("monitor#drift-1",)


# -- the drift policy ---------------------------------------------------------------------------

def col(drifted: bool) -> ColumnDrift:
    return ColumnDrift(0.5 if drifted else 0.01, "Wasserstein distance (normed)", 0.1, drifted)


@pytest.mark.parametrize("flags, share, expected", [
    ([], 0.5, (0.0, False)),
    ([False] * 6, 0.1, (0.0, False)),
    ([True] + [False] * 5, 0.1, (1 / 6, True)),
    ([True] + [False] * 5, 0.5, (1 / 6, False)),
    ([True, True, False, False], 0.5, (0.5, True)),
    ([True] * 3, 1.0, (1.0, True)),
])
def test_decide_drift_is_evidentlys_share_rule(flags, share, expected):
    columns = {f"c{i}": col(f) for i, f in enumerate(flags)}
    got = decide_drift(columns, DriftPolicy(drift_share=share))
    assert got[1] == expected[1] and got[0] == pytest.approx(expected[0])


def test_columns_methods_and_thresholds_per_column_and_type():
    policy = DriftPolicy(columns=("a", "b", "c", "zz"), categorical=("c",), num_method="ks",
                         cat_method="chisquare", methods={"b": "psi"}, num_threshold=0.05,
                         thresholds={"a": 0.2})
    assert policy.compared(("a", "b", "c", "d"), ("c", "b", "a", "label")) == ("a", "b", "c")
    assert [policy.method_for(c) for c in "abc"] == ["ks", "psi", "chisquare"]
    assert [policy.threshold_for(c) for c in "abc"] == [0.2, 0.05, None]
    assert DriftPolicy().compared(("x", "y"), ("y",)) == ("y",)


@pytest.mark.parametrize("kwargs", [{"drift_share": 0.0}, {"drift_share": 1.5},
                                    {"prediction_rows": 0}, {"thresholds": {"a": -1.0}},
                                    {"num_threshold": float("nan")}])
def test_invalid_drift_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        DriftPolicy(**kwargs)


def test_prediction_buffer_fills_then_starts_over():
    buffer, policy = PredictionBuffer(), DriftPolicy(prediction_rows=3)
    buffer.add(["a-0", "a-1"], [{"f": 1.0}, {"f": 2.0}], [0, 1])
    assert not buffer.ready(policy)
    buffer.add(["b-0"], [{"f": 3.0}], [1])
    assert buffer.ready(policy)
    rows, version = buffer.take()
    assert rows == [{"f": 1.0, "prediction": 0}, {"f": 2.0, "prediction": 1}, {"f": 3.0, "prediction": 1}]
    assert version == "predictions:a-0..b-0"
    assert buffer.rows == [] and not buffer.ready(policy)
