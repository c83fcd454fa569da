"""Typed `data` of every loopline event type, one versioned schema each.

Names follow one rule: facts are past tense (`DataArrived`, `ModelPromoted`), requests are
imperatives (`TrainingRequested` is the fact that a training was requested). Each schema
carries `schema_version`; a consumer rejects versions it does not know instead of guessing.
Schemas are strict (no coercion of "5" into 5) and forbid unknown fields, so a producer's typo
is a clear dead-letter reason rather than a silently ignored value.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.envelope import CloudEvent, EnvelopeError


class EventData(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    TYPE: ClassVar[str]
    schema_version: Literal[1] = 1


class DataArrived(EventData):
    TYPE = "io.loopline.data.arrived"
    uri: str = Field(min_length=1)                 # where the batch lies (file://, s3://, gs://)
    rows: int = Field(ge=0)
    version: str = Field(min_length=1)             # dataset version of this batch
    digest: str | None = None                      # content digest, e.g. "sha256:..."
    columns: dict[str, str] = Field(default_factory=dict)   # column -> dtype


class DriftDetected(EventData):
    TYPE = "io.loopline.drift.detected"
    dataset_version: str
    reference_version: str
    drift_share: float = Field(ge=0, le=1)
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict)   # column -> score, method, threshold, drifted
    report_uri: str | None = None                  # the HTML report, an MLflow artifact (runs:/...)
    model_version: str | None = None               # the version whose reference was compared
    origin: Literal["data", "predictions"] = "data"    # a data batch or the serving prediction log
    rows: int = Field(ge=0, default=0)


class MetricReported(EventData):
    TYPE = "io.loopline.metric.reported"
    metric: str
    value: float
    count: int = Field(ge=0)
    model_version: str | None = None
    window_start: float | None = None
    window_end: float | None = None


class PredictionLogged(EventData):
    """What the serving endpoint answered: one event per predict call, one id per row."""
    TYPE = "io.loopline.prediction.logged"
    model_version: str = Field(min_length=1)
    prediction_ids: list[str] = Field(min_length=1)
    features: list[dict[str, Any]]                 # the input rows, in the order of the ids
    predictions: list[Any]

    @model_validator(mode="after")
    def _same_length(self):
        if not len(self.prediction_ids) == len(self.features) == len(self.predictions):
            raise ValueError(f"prediction_ids ({len(self.prediction_ids)}), features "
                             f"({len(self.features)}) and predictions ({len(self.predictions)}) "
                             "must have one entry per row")
        return self


class FeedbackReceived(EventData):
    """The true label of one logged prediction, joined with what was predicted.

    The serving replica that takes the feedback need not be the one that predicted: what the
    join needs travels in the signed prediction id (`serving.ids`). `experiment` names the
    rollout the prediction was routed by, so the worker credits the reward to its arm."""
    TYPE = "io.loopline.feedback.received"
    prediction_id: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    label: float | int | str | bool
    prediction: float | int | str | bool | None = None
    predicted_at: float | None = None
    experiment: str | None = None


class ShadowPredicted(EventData):
    """A shadow rollout's pair: what the champion answered (the caller got it) and what the
    challenger would have answered, for the rows of one request, scored in the background."""
    TYPE = "io.loopline.shadow.predicted"
    experiment: str = Field(min_length=1)
    champion_version: str = Field(min_length=1)
    challenger_version: str = Field(min_length=1)
    prediction_ids: list[str] = Field(min_length=1)
    champion: list[Any]
    challenger: list[Any]

    @model_validator(mode="after")
    def _same_length(self):
        if not len(self.prediction_ids) == len(self.champion) == len(self.challenger):
            raise ValueError("prediction_ids, champion and challenger need one entry per row")
        return self


Strategy = Literal["canary", "ab", "shadow", "bandit"]


class RolloutStarted(EventData):
    """The deployer set the `challenger` alias instead of moving the champion: an experiment
    between the champion and the challenger(s) begins, run by the model's rollout strategy."""
    TYPE = "io.loopline.rollout.started"
    experiment: str = Field(min_length=1)          # id: unique per rollout, stable on redelivery
    strategy: Strategy
    champion_version: str | None = None            # None: the first model has no champion
    challenger_versions: list[str] = Field(min_length=1)
    reason: str = ""


class ArmState(BaseModel):
    """One arm's traffic and what its feedback said so far (rewards: 0/1 or continuous)."""
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    version: str = Field(min_length=1)
    role: Literal["champion", "challenger"]
    weight: float = Field(ge=0, le=1)              # share of traffic (canary, ab); bandits: none
    n: int = Field(0, ge=0)                        # rewards counted
    reward_sum: float = 0.0
    reward_sq: float = Field(0.0, ge=0)            # sum of squares, for the Gaussian posterior
    step_n: int = Field(0, ge=0)                   # rewards counted in the current step


class ExperimentUpdated(EventData):
    """The state every serving replica routes by, folded by the worker from feedback.

    Published when it changes (at most every `publish_interval`) and re-published while the
    experiment lives (a heartbeat), so a replica that starts reads the newest one per model.
    `offsets`: feedback partition -> next offset folded into these counts, so a worker that
    restarts from this state skips what it already counted (exactly-once counting)."""
    TYPE = "io.loopline.experiment.updated"
    experiment: str = Field(min_length=1)
    strategy: Strategy
    status: Literal["running", "paused", "ended"]
    arms: list[ArmState] = Field(min_length=1)
    step: int = Field(0, ge=0)
    started_at: float
    step_started_at: float
    algorithm: Literal["thompson", "epsilon_greedy", "ucb1"] | None = None   # bandits
    reward: Literal["bernoulli", "gaussian"] = "bernoulli"
    epsilon: float = Field(0.1, ge=0, le=1)
    unit_key: str | None = None                    # header or row field the split hashes (ab)
    winner: str | None = None                      # set when ended: the version traffic goes to
    offsets: dict[str, int] = Field(default_factory=dict)


class RolloutAnalysed(EventData):
    """An analysis of the online metrics: what was found, with the numbers and the test used,
    and what it does: hold, step (more traffic), promote, rollback or pause (for a person)."""
    TYPE = "io.loopline.rollout.analysed"
    experiment: str = Field(min_length=1)
    step: int = Field(ge=0)
    verdict: Literal["successful", "failed", "inconclusive", "progressing"]
    action: Literal["step", "promote", "rollback", "pause"]
    version: str | None = None                     # promote: the winner; rollback: the loser
    champion_version: str | None = None
    weight: float = Field(0.0, ge=0, le=1)          # the challenger's traffic after the action
    test: str                                      # the test, in words
    numbers: dict[str, float | int | None] = Field(default_factory=dict)
    reason: str = Field(min_length=1)


class RollbackRequested(EventData):
    """A policy (not an operator) asks the deployer to move the alias back from `from_version`."""
    TYPE = "io.loopline.rollback.requested"
    version: str = Field(min_length=1)             # roll back to this (it was champion before)
    from_version: str = Field(min_length=1)        # refused if the champion moved meanwhile
    reason: str = Field(min_length=1)


class OperatorCommand(EventData):
    TYPE = "io.loopline.operator.command"
    command: Literal["retrain", "promote", "rollback", "pause", "resume"]
    reason: str = Field(min_length=1)
    operator: str = Field(min_length=1)
    version: str | None = None                     # promote --version / rollback --to


class ClockTicked(EventData):
    """Lets time-based rules (cooldown expiry, staleness) fire without a new data event.

    The worker ticks each partition of the clock topic (subject `*`, `partition` set): the tick
    stands for every model whose key lands on that partition, so the clock costs O(partitions)
    events a second, not O(models). A tick without `partition` is for its subject's model alone.
    """
    TYPE = "io.loopline.clock.ticked"
    partition: int | None = Field(None, ge=0)


class TrainingRequested(EventData):
    TYPE = "io.loopline.training.requested"
    idempotency_key: str = Field(min_length=1)
    reason: str
    causes: list[str] = Field(default_factory=list)        # `source#id` of the triggering events
    data_uris: list[str] = Field(default_factory=list)
    data_versions: list[str] = Field(default_factory=list)
    rows: int = Field(ge=0, default=0)


class TrainingStarted(EventData):
    TYPE = "io.loopline.training.started"
    idempotency_key: str
    run_name: str
    launcher: str
    created: bool = True           # False when the run already existed (a redelivered request)


class TrainingSucceeded(EventData):
    TYPE = "io.loopline.training.succeeded"
    idempotency_key: str
    run_name: str
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)   # step -> its outputs
    duration_seconds: float | None = None


class TrainingFailed(EventData):
    TYPE = "io.loopline.training.failed"
    idempotency_key: str
    run_name: str
    reason: str
    log_tail: list[str] = Field(default_factory=list)
    duration_seconds: float | None = None


class ModelEvaluated(EventData):
    TYPE = "io.loopline.model.evaluated"
    version: str
    run_name: str
    metric: str
    candidate_metrics: dict[str, float | None] = Field(default_factory=dict)
    champion_version: str | None = None
    champion_metrics: dict[str, float | None] | None = None
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class ModelPromoted(EventData):
    TYPE = "io.loopline.model.promoted"
    version: str
    champion_version: str | None = None            # the champion it was compared with
    reasons: list[str] = Field(default_factory=list)


class DeploymentDone(EventData):
    TYPE = "io.loopline.deployment.done"
    version: str
    previous_version: str | None = None
    alias: str = "champion"
    reason: str = ""


class DeploymentRolledBack(EventData):
    TYPE = "io.loopline.deployment.rolledback"
    version: str                                   # the champion after the rollback
    from_version: str | None = None
    alias: str = "champion"
    reason: str = ""


class DeploymentRefused(EventData):
    TYPE = "io.loopline.deployment.refused"
    version: str | None = None
    reason: str


class DecisionRecorded(EventData):
    """What a policy decided on one signal, skips included: the answer to "why did this event
    (not) start a training?". Caused by the signal (`causationid`), in the signal's chain."""
    TYPE = "io.loopline.decision.recorded"
    policy: Literal["retrain", "drift", "metric", "promotion", "deploy", "rollout", "operator"]
    outcome: str                                   # "requested", "skipped", "suppressed", "no_drift", ...
    reason: str                                    # the policy's sentence, as a person reads it
    signal_id: str | None = None                   # id of the event the policy decided on
    signal_type: str | None = None
    request_id: str | None = None                  # when a training was requested: its id


EVENT_TYPES: dict[str, type[EventData]] = {cls.TYPE: cls for cls in (
    DataArrived, DriftDetected, MetricReported, OperatorCommand, ClockTicked,
    TrainingRequested, TrainingStarted, TrainingSucceeded, TrainingFailed,
    ModelEvaluated, ModelPromoted, DeploymentDone, DeploymentRolledBack, DeploymentRefused,
    PredictionLogged, FeedbackReceived, RollbackRequested, ShadowPredicted,
    RolloutStarted, ExperimentUpdated, RolloutAnalysed, DecisionRecorded)}


class DataError(ValueError):
    """The event's `data` does not match the schema of its type."""


def parse_data(event: CloudEvent) -> EventData:
    """The typed data of `event`; raises EnvelopeError for an unknown type, DataError for bad data."""
    cls = EVENT_TYPES.get(event.type)
    if cls is None:
        raise EnvelopeError(f"unknown event type {event.type!r}")
    try:
        return cls.model_validate(dict(event.data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}" for err in exc.errors())
        raise DataError(f"{event.type} data is invalid: {problems}") from None


def to_data(data: EventData) -> dict[str, Any]:
    return data.model_dump(mode="json")
