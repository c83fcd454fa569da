"""The topics of the loop: one frozen spec each, one dotted naming scheme, keyed by model name.

Every topic is created explicitly at start-up with its declared partition count (see
`streams.admin`): Faust tables fail when a source topic and its changelog disagree, so nothing
relies on broker auto-create. A `prefix` namespaces a whole deployment (or one test) on a
shared cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams import events as ev


@dataclass(frozen=True)
class TopicSpec:
    role: str                      # stable role name used in code ("data", "training", ...)
    suffix: str                    # dotted name after the prefix
    accepts: tuple[str, ...]       # event types allowed on it; anything else is dead-lettered
    partitions: int = 4
    retention_ms: int | None = None

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("data", "data.arrived", (ev.DataArrived.TYPE,)),
    TopicSpec("drift", "drift.detected", (ev.DriftDetected.TYPE,)),
    TopicSpec("metrics", "metric.reported", (ev.MetricReported.TYPE,)),
    TopicSpec("operator", "operator.command", (ev.OperatorCommand.TYPE,)),
    # Internal: commands the operator gate verified (signature, expiry, replay), forwarded
    # unchanged; the trigger and the deployer read this, never the raw operator topic.
    TopicSpec("operator-verified", "operator.verified", (ev.OperatorCommand.TYPE,)),
    # Internal re-key topics (agents.rekey): an input event a producer put on another partition
    # than its model's is forwarded here unchanged, onto its model's partition, before any agent
    # touches the model's state. The trigger reads the first, the operator gate the second.
    TopicSpec("inputs-rekeyed", "inputs.rekeyed", (
        ev.DataArrived.TYPE, ev.DriftDetected.TYPE, ev.MetricReported.TYPE)),
    TopicSpec("operator-rekeyed", "operator.rekeyed", (ev.OperatorCommand.TYPE,)),
    TopicSpec("clock", "clock.ticked", (ev.ClockTicked.TYPE,), retention_ms=3_600_000),
    TopicSpec("training-requests", "training.requested", (ev.TrainingRequested.TYPE,)),
    TopicSpec("training", "training.status", (
        ev.TrainingStarted.TYPE, ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE)),
    TopicSpec("evaluation", "model.evaluated", (ev.ModelEvaluated.TYPE,)),
    # A policy's rollback request travels with the promotions: the deployer reads both, in order.
    TopicSpec("promotion", "model.promoted", (ev.ModelPromoted.TYPE, ev.RollbackRequested.TYPE)),
    TopicSpec("deployment", "deployment.status", (
        ev.DeploymentDone.TYPE, ev.DeploymentRolledBack.TYPE, ev.DeploymentRefused.TYPE)),
    # Written by the serving endpoint: what it predicted (read by the drift monitor) and the
    # true labels that came back for it (aggregated into metric windows).
    TopicSpec("predictions", "prediction.logged", (ev.PredictionLogged.TYPE,)),
    TopicSpec("feedback", "feedback.received", (ev.FeedbackReceived.TYPE,)),
    # Serving experiments (agents.experiments, serving): the deployer starts a rollout and the
    # experiment folder's analyses travel here (the deployer reads them back to promote or roll
    # back); the folded state every serving replica routes by has its own topic, with a
    # retention (replicas read back to the newest state per model: it is re-published while the
    # experiment lives); shadow pairs are the third.
    TopicSpec("rollout", "rollout.status", (ev.RolloutStarted.TYPE, ev.RolloutAnalysed.TYPE)),
    TopicSpec("experiment", "experiment.state", (ev.ExperimentUpdated.TYPE,),
              retention_ms=7 * 86_400_000),
    TopicSpec("shadow", "shadow.predicted", (ev.ShadowPredicted.TYPE,)),
    # Every policy decision, skips included (agents.context.Context.record): bounded by its
    # retention, and by leaving out the clock ticks that decide nothing.
    TopicSpec("decisions", "decision.recorded", (ev.DecisionRecorded.TYPE,), retention_ms=7 * 86_400_000),
    TopicSpec("deadletter", "deadletter", ()),
)
BY_ROLE = {spec.role: spec for spec in SPECS}
# A type accepted on several topics is published to the first (operator, not operator.verified).
ROLE_OF_TYPE = {t: spec.role for spec in reversed(SPECS) for t in spec.accepts}
# The input topics any producer may write, keyed any way: role -> the role of its re-key topic.
REKEYED = {"data": "inputs-rekeyed", "drift": "inputs-rekeyed", "metrics": "inputs-rekeyed",
           "operator": "operator-rekeyed"}


@dataclass(frozen=True)
class Topics:
    """Concrete topic names for one prefix: `Topics("loopline").data == "loopline.data.arrived"`."""
    prefix: str = "loopline"
    partitions: int = 4

    def __getattr__(self, role: str) -> str:
        spec = BY_ROLE.get(role.replace("_", "-"))
        if spec is None:
            raise AttributeError(role)
        return spec.name(self.prefix)

    def for_type(self, event_type: str) -> str:
        return BY_ROLE[ROLE_OF_TYPE[event_type]].name(self.prefix)

    def all(self) -> dict[str, TopicSpec]:
        return {spec.name(self.prefix): spec for spec in SPECS}

    def spec_of(self, topic: str) -> TopicSpec | None:
        return self.all().get(topic)

    def rekey_topics(self) -> dict[str, str]:
        """Input topic -> the re-key topic its records go to when off their model's partition."""
        return {BY_ROLE[role].name(self.prefix): BY_ROLE[target].name(self.prefix)
                for role, target in REKEYED.items()}

    def partition_of(self, key: str) -> int:
        """The partition a record keyed `key` lands on with Kafka's default partitioner (murmur2:
        the Java client, kafka-python, aiokafka; librdkafka only with `partitioner=murmur2_random`).
        A model's state and ticks live on it, and loopline's own events are keyed onto it; input
        events other producers put elsewhere are re-keyed onto it first (`agents.rekey`)."""
        from kafka.partitioner.default import murmur2

        return (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
