"""`streams.describe`: every event type has its one line, and the lines people know read as before."""

from __future__ import annotations

import pytest
from rich.text import Text

from streams import events as ev
from streams.describe import describe

# One valid event of every type. A new type in `streams.events` fails test_every_event_type_...
# until it has a sample here, and then until `describe` gives it a line.
SAMPLES: dict[type[ev.EventData], ev.EventData] = {s.__class__: s for s in (
    ev.DataArrived(uri="file:///b0", rows=1000, version="batch-00000"),
    ev.DriftDetected(dataset_version="batch-00004", reference_version="batch-00000,batch-00001",
                     drift_share=0.17, model_version="1",
                     columns={"f5": {"method": "Wasserstein distance (normed)", "score": 1.4912, "drifted": True},
                              "f1": {"method": "Wasserstein distance (normed)", "score": 0.02, "drifted": False}}),
    ev.MetricReported(metric="accuracy", value=0.9, count=12, model_version="3"),
    ev.PredictionLogged(model_version="3", prediction_ids=["p1", "p2"], features=[{"f": 1}, {"f": 2}],
                        predictions=[0, 1]),
    ev.FeedbackReceived(prediction_id="p1", model_version="3", label=1, prediction=0),
    ev.RollbackRequested(version="1", from_version="2", reason="accuracy 0.41 < 0.6"),
    ev.OperatorCommand(command="pause", reason="incident", operator="alice"),
    ev.ClockTicked(partition=3),
    ev.TrainingRequested(idempotency_key="k", reason="data", data_versions=["batch-00000", "batch-00001"]),
    ev.TrainingStarted(idempotency_key="k", run_name="classifier-858d", launcher="local"),
    ev.TrainingSucceeded(idempotency_key="k", run_name="classifier-858d", duration_seconds=15.83,
                         outputs={"prepare": {"rows": 2000}, "train": {"model_version": "1"}}),
    ev.TrainingFailed(idempotency_key="k", run_name="classifier-858d", reason="step train exited 1",
                      duration_seconds=3.0),
    ev.ModelEvaluated(version="1", run_name="classifier-858d", metric="accuracy", passed=True,
                      candidate_metrics={"accuracy": 0.908}, reasons=["accuracy 0.908 >= 0.7", "no champion yet"]),
    ev.ModelPromoted(version="1"),
    ev.DeploymentDone(version="3", previous_version="1", reason="promotion"),
    ev.DeploymentRolledBack(version="1", from_version="2", reason="manual rollback: v2 is bad"),
    ev.DeploymentRefused(version="2", reason="v2 is not newer than the champion v3"),
    ev.ShadowPredicted(experiment="clf-v4-1a2b", champion_version="3", challenger_version="4",
                       prediction_ids=["p1", "p2"], champion=[0, 1], challenger=[0, 0]),
    ev.RolloutStarted(experiment="clf-v4-1a2b", strategy="canary", champion_version="3",
                      challenger_versions=["4"], reason="v4 passed the gate"),
    ev.ExperimentUpdated(experiment="clf-v4-1a2b", strategy="canary", status="running", step=1,
                         started_at=0.0, step_started_at=60.0, arms=[
                             ev.ArmState(version="3", role="champion", weight=0.75, n=300, reward_sum=270.0),
                             ev.ArmState(version="4", role="challenger", weight=0.25, n=0)]),
    ev.RolloutAnalysed(experiment="clf-v4-1a2b", step=1, verdict="progressing", action="step",
                       weight=0.5, test="Bayesian P(challenger > champion)", numbers={"p_better": 0.97},
                       reason="P(v4 better) 0.97 >= 0.95: step 2 at 50%"),
    ev.DecisionRecorded(policy="retrain", outcome="suppressed", reason="training in flight; queued follow-up",
                        signal_id="e1", signal_type=ev.DriftDetected.TYPE),
)}


@pytest.mark.parametrize("cls", ev.EVENT_TYPES.values(), ids=lambda cls: cls.TYPE)
def test_every_event_type_has_a_one_line_description_without_markup(cls):
    assert cls in SAMPLES, f"no sample of {cls.__name__} in {__file__}: add one"
    line = describe(SAMPLES[cls])
    assert line, f"{cls.__name__} has no description in streams/describe.py"
    assert "\n" not in line and Text.from_markup(line).plain == line


@pytest.mark.parametrize("data, line", [
    (SAMPLES[ev.DataArrived], "batch-00000: 1000 rows"),
    (SAMPLES[ev.TrainingRequested], "reason=data on batch-00000, batch-00001"),
    (ev.TrainingRequested(idempotency_key="k", reason="manual"), "reason=manual"),
    (SAMPLES[ev.TrainingSucceeded], "run classifier-858d → v1 in 15.8s"),
    (ev.TrainingSucceeded(idempotency_key="k", run_name="r"), "run r succeeded"),
    (SAMPLES[ev.ModelEvaluated], "v1 passed: accuracy 0.908 >= 0.7; no champion yet"),
    (SAMPLES[ev.ModelPromoted], "v1 promoted over v-"),
    (SAMPLES[ev.DriftDetected], "batch-00004 vs v1 reference (batch-00000,batch-00001): share 0.17, "
                                "drifted: f5 (Wasserstein distance (normed) 1.49)"),
    (SAMPLES[ev.OperatorCommand], "pause by alice: incident"),
    (ev.OperatorCommand(command="promote", version="4", reason="hotfix", operator="bob"),
     "promote v4 by bob: hotfix"),
    (SAMPLES[ev.DeploymentDone], "champion → v3 (was v1): promotion"),
    (SAMPLES[ev.DeploymentRolledBack], "champion rolled back v2 → v1: manual rollback: v2 is bad"),
    (SAMPLES[ev.MetricReported], "v3 accuracy 0.900 over 12 predictions"),
    (ev.ClockTicked(), "this model"),
    (SAMPLES[ev.DecisionRecorded], "retrain → suppressed: training in flight; queued follow-up"),
    (ev.DecisionRecorded(policy="drift", outcome="no_drift", reason="share 0.10 < 0.5"),
     "drift → no drift: share 0.10 < 0.5"),
])
def test_the_line_of(data, line):
    assert describe(data) == line


def test_a_multi_line_reason_stays_on_one_line():
    failed = ev.TrainingFailed(idempotency_key="k", run_name="r", reason="Traceback:\n  boom\nValueError: x")
    assert describe(failed) == "run r failed: Traceback: boom ValueError: x"


def test_free_form_drift_details_never_break_the_line():
    odd = ev.DriftDetected(dataset_version="b", reference_version="a", drift_share=0.5,
                           columns={"f": {"drifted": True, "score": None}, "g": {"drifted": False}})
    assert describe(odd) == "b vs reference a: share 0.50, drifted: f (?)"
