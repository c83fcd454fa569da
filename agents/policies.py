"""The decision policies of loopline, in one import.

Why this module: agents decide nothing themselves. Each agent turns an event into plain data,
calls one of these pure functions and executes the decision it returns (a Dagster-sensor
style `TrainRequest` / `Skip`, `Promote` / `Reject`, `Deploy` / `Refuse`). The policies import
nothing from faust, kafka, mlflow or kubernetes, do no I/O and read no clock: time is a
parameter. The code lives in `agents/policy/` (one module per decision); this re-exports it.
"""

from agents.policy.deploy import Deploy, Refuse, decide_deploy, decide_rollback, push_history
from agents.policy.drift import ColumnDrift, DriftPolicy, PredictionBuffer, decide_drift
from agents.policy.metric import (GuardState, MetricPolicy, Retrain, Rollback, Window,
                                  decide_on_metric, on_deployment)
from agents.policy.promotion import Gate, Promote, Reject, Scores, decide_promotion
from agents.policy.retrain import (
    MAX_CAUSES,
    Batch,
    DataArrived,
    Decision,
    DriftDetected,
    ManualRetrain,
    MetricDegraded,
    ModelState,
    RetrainPolicy,
    Signal,
    Skip,
    Tick,
    TrainingFinished,
    TrainRequest,
    decide_retrain,
    idempotency_key,
    wants_ticks,
)

__all__ = [
    "MAX_CAUSES", "Batch", "DataArrived", "Decision", "Deploy", "DriftDetected", "Gate",
    "ManualRetrain", "ModelState", "Promote", "Refuse", "Reject", "RetrainPolicy", "Scores",
    "Signal", "Skip", "Tick", "TrainRequest", "TrainingFinished", "decide_deploy",
    "decide_promotion", "decide_retrain", "decide_rollback", "idempotency_key", "push_history",
    "wants_ticks",
]
__all__ += [
    "ColumnDrift", "DriftPolicy", "GuardState", "MetricDegraded", "MetricPolicy",
    "PredictionBuffer", "Retrain", "Rollback", "Window", "decide_drift", "decide_on_metric",
    "on_deployment",
]
