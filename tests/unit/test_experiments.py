"""The experiment folder: feedback → per-arm rewards → analysis → RolloutAnalysed + ExperimentUpdated.

Driven directly with the records a batch consumer would hand it (real encoded events), on a real
Context whose producer is the recording double: what it publishes is read back decoded, and a
"restart" is a new folder restoring from what the first one published.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from agents.batch import Record
from agents.experiments import ExperimentFolder
from agents.policy.metric import MetricPolicy
from agents.policy.rollout import RolloutPolicy
from streams import events as ev
from streams.codec import build, encode, encode_headers
from tests.unit import agent_doubles as doubles

T = doubles.TOPICS
MODEL = "clf"
P = T.partition_of(MODEL)                      # every record of the model is on this number
CANARY = RolloutPolicy(strategy="canary", steps=(0.1, 0.5, 1.0), min_step_seconds=10,
                       min_samples=50, max_step_seconds=100)


def models(rollout=CANARY, metric="accuracy"):
    return {MODEL: SimpleNamespace(metrics=MetricPolicy(floor=0.5, metric=metric), rollout=rollout)}


class Bus:
    """Offsets per topic, and records of real encoded events on the model's partition."""

    def __init__(self):
        self.next = defaultdict(int)

    def batch(self, *items) -> dict:
        """items: (topic, event data) → {(topic, P): [Record, ...]} in order."""
        out: dict = {}
        for topic, data in items:
            event = data if hasattr(data, "subject") else build(data, MODEL, source="test")
            offset = self.next[topic]
            self.next[topic] += 1
            out.setdefault((topic, P), []).append(
                Record(topic, P, offset, MODEL.encode(), encode(event), encode_headers()))
        return out


class World:
    """A folder on a recording producer, and what it published."""

    def __init__(self, rollout=CANARY, producer=None, metric="accuracy", **kwargs):
        self.ctx = doubles.context(models(rollout, metric))
        if producer is not None:                # a restarted worker: same broker, new process
            self.ctx.app.producer = producer
        self.producer = self.ctx.app.producer
        self.folder = ExperimentFolder(self.ctx, doubles.PublishedLog(self.producer, T.experiment),
                                       **kwargs)

    def run(self, batch: dict, now: float) -> dict:
        return asyncio.run(self.folder.process(batch, now, {}))

    def states(self) -> list[dict]:
        return [e.data for e in self.producer.events(T.experiment)]

    def analyses(self) -> list:
        return [e for e in self.producer.events(T.rollout) if e.type == ev.RolloutAnalysed.TYPE]

    def metric(self, name: str, **labels) -> float | None:
        return self.ctx.metrics.registry.get_sample_value(name, labels)


def start(bus: Bus, strategy="canary", experiment="exp-1", challengers=("2",)):
    data = ev.RolloutStarted(experiment=experiment, strategy=strategy, champion_version="1",
                             challenger_versions=list(challengers))
    event = build(data, MODEL, source="test")
    return event, bus.batch((T.rollout, event))


def feedback(bus: Bus, version: str, rights: int, wrongs: int, experiment="exp-1", first=0):
    """Labelled predictions of `version`: `rights` answered right, then `wrongs` wrong."""
    return bus.batch(*((T.feedback, ev.FeedbackReceived(
        prediction_id=f"p{version}-{first + i}", model_version=version, label=1,
        prediction=1 if i < rights else 0, experiment=experiment)) for i in range(rights + wrongs)))


def merge(*batches: dict) -> dict:
    out: dict = {}
    for batch in batches:
        for tp, records in batch.items():
            out.setdefault(tp, []).extend(records)
    return out


def arms(state: dict) -> dict:
    return {a["version"]: a for a in state["arms"]}


def test_a_better_canary_steps_through_every_weight_and_is_promoted():
    w, bus = World(), Bus()
    event, batch = start(bus)
    t0 = event.timestamp
    commit = w.run(batch, t0)
    first = w.states()[-1]
    assert (first["status"], first["step"], first["strategy"]) == ("running", 0, "canary")
    assert {v: a["weight"] for v, a in arms(first).items()} == {"1": 0.9, "2": 0.1}
    assert commit == {(T.rollout, P): 1}
    assert w.producer.partitions[-1] == P        # the model's partition number, for the restore

    now, seen = t0, 0
    for step, weight in ((0, 0.5), (1, 1.0)):
        w.run(merge(feedback(bus, "1", 30, 30, first=seen), feedback(bus, "2", 54, 6, first=seen)), now + 1)
        seen += 60
        assert len(w.analyses()) == step         # held: the step's minimum time has not passed
        w.run({}, now + 11)                      # an idle call: the clock decides
        analysis = w.analyses()[-1]
        assert analysis.id == f"analysis-exp-1-{step}-step"
        assert (analysis.data["verdict"], analysis.data["action"]) == ("progressing", "step")
        assert analysis.data["weight"] == weight and analysis.data["numbers"]["p_better"] > 0.95
        state = w.states()[-1]
        assert state["step"] == step + 1 and arms(state)["2"]["weight"] == weight
        assert arms(state)["2"]["step_n"] == 0 and arms(state)["2"]["n"] == seen   # per step / total
        assert state["step_started_at"] == now + 11
        now += 11

    w.run(merge(feedback(bus, "1", 30, 30, first=seen), feedback(bus, "2", 54, 6, first=seen)), now + 1)
    w.run({}, now + 11)
    promote = w.analyses()[-1]
    assert (promote.data["verdict"], promote.data["action"], promote.data["version"]) == \
        ("successful", "promote", "2")
    assert promote.data["champion_version"] == "1" and promote.data["numbers"]["n_challenger"] == 180
    assert "P(challenger > champion" in promote.data["test"]
    final = w.states()[-1]
    assert (final["status"], final["winner"]) == ("ended", "2")
    assert arms(final)["1"]["n"] == 180 and arms(final)["2"]["reward_sum"] == 162
    assert w.metric("loopline_experiment_weight", model=MODEL, version="2") == 1.0
    assert w.metric("loopline_rollout_analyses_total", verdict="progressing", action="step") == 2
    published = len(w.states())
    w.run({}, now + 200)                         # ended: nothing analysed or published again
    assert len(w.analyses()) == 3 and len(w.states()) == published


def test_a_worse_challenger_is_rolled_back_without_waiting_for_the_step():
    w, bus = World(), Bus()
    event, batch = start(bus)
    w.run(batch, event.timestamp)
    w.run(merge(feedback(bus, "1", 48, 12), feedback(bus, "2", 24, 36)), event.timestamp + 1)
    rollback = w.analyses()[-1]
    assert (rollback.data["verdict"], rollback.data["action"], rollback.data["version"]) == \
        ("failed", "rollback", "2")
    assert rollback.data["numbers"]["p_worse"] >= 0.95 and rollback.data["weight"] == 0.0
    state = w.states()[-1]
    assert (state["status"], state["winner"]) == ("ended", "1")
    assert {v: a["weight"] for v, a in arms(state).items()} == {"1": 1.0, "2": 0.0}


def test_a_lower_is_better_metric_becomes_a_higher_is_better_reward():
    w, bus = World(metric="error_rate"), Bus()
    event, batch = start(bus)
    w.run(batch, event.timestamp)
    w.run(feedback(bus, "2", 3, 1), event.timestamp + 1)      # 3 right: error 0, reward 1
    assert arms(w.states()[-1])["2"]["reward_sum"] == 3


def test_too_little_feedback_pauses_and_a_deployment_then_ends_the_experiment():
    w, bus = World(), Bus()
    old = build(ev.DeploymentDone(version="1"), MODEL, source="test")   # from before the rollout
    event, batch = start(bus)
    t0 = event.timestamp
    w.run(batch, t0)
    w.run(merge(feedback(bus, "1", 5, 5), feedback(bus, "2", 5, 0)), t0 + 1)
    w.run({}, t0 + 99)
    assert not w.analyses()                      # still within max_step_seconds
    w.run({}, t0 + 101)
    pause = w.analyses()[-1]
    assert (pause.data["verdict"], pause.data["action"]) == ("inconclusive", "pause")
    assert "too little feedback" in pause.data["reason"]
    assert w.states()[-1]["status"] == "paused"
    w.run(feedback(bus, "2", 3, 0, first=5), t0 + 102)    # still counted while a person decides
    w.run({}, t0 + 500)
    assert len(w.analyses()) == 1                # a paused experiment is not analysed again
    assert arms(w.states()[-1])["2"]["n"] == 8
    w.run(bus.batch((T.deployment, old)), t0 + 501)
    assert w.states()[-1]["status"] == "paused"  # older than the rollout: not its end
    promoted = build(ev.DeploymentDone(version="2", previous_version="1", reason="manual promote"),
                     MODEL, source="test")
    w.run(bus.batch((T.deployment, promoted)), t0 + 502)
    state = w.states()[-1]
    assert (state["status"], state["winner"]) == ("ended", "2")


def test_an_operator_rollback_of_a_running_experiment_ends_it_on_the_champion():
    w, bus = World(), Bus()
    event, batch = start(bus)
    w.run(batch, event.timestamp)
    dropped = build(ev.DeploymentRolledBack(version="1", from_version="2", reason="manual rollback"),
                    MODEL, source="test")
    w.run(bus.batch((T.deployment, dropped)), event.timestamp + 1)
    assert (w.states()[-1]["status"], w.states()[-1]["winner"]) == ("ended", "1")
    w.run(feedback(bus, "2", 5, 0), event.timestamp + 2)
    assert arms(w.states()[-1])["2"]["n"] == 0   # an ended experiment counts nothing more


def test_a_restart_from_the_published_state_counts_nothing_twice():
    w, bus = World(), Bus()
    event, rollout = start(bus)
    t0 = event.timestamp
    w.run(rollout, t0)
    counted = feedback(bus, "1", 60, 40)                      # offsets 0..99
    assert w.run(counted, t0 + 1) == {(T.feedback, P): 100}   # published: all committable
    assert w.states()[-1]["offsets"] == {str(P): 100}
    unpublished = feedback(bus, "2", 30, 20)                  # offsets 100..149
    commit = w.run(unpublished, t0 + 1.2)                     # within publish_interval: held
    assert commit == {(T.feedback, P): 100}
    assert arms(w.states()[-1])["2"]["n"] == 0

    # The worker dies. Its successor (nothing committed: the worst case) reads everything again.
    again = World(producer=w.producer)
    commit = again.run(merge(rollout, counted, unpublished), t0 + 2)
    state = again.states()[-1]
    assert state["experiment"] == "exp-1" and state["step"] == 0
    assert (arms(state)["1"]["n"], arms(state)["1"]["reward_sum"]) == (100, 60)   # not 200
    assert (arms(state)["2"]["n"], arms(state)["2"]["reward_sum"]) == (50, 30)     # once
    assert state["offsets"] == {str(P): 150} and commit[(T.feedback, P)] == 150
    again.run(feedback(bus, "2", 10, 0, first=50), t0 + 3)    # and it goes on counting
    assert arms(again.states()[-1])["2"]["n"] == 60


def test_a_revoked_feedback_partition_is_restored_from_the_published_state():
    w, bus = World(), Bus()
    event, rollout = start(bus)
    w.run(rollout, event.timestamp)
    w.run(feedback(bus, "1", 10, 0), event.timestamp + 1)
    held = feedback(bus, "1", 5, 0, first=10)
    assert w.run(held, event.timestamp + 1.1) == {(T.feedback, P): 10}
    w.folder.revoked([(T.feedback, P)])          # a failed batch: replayed from the commit
    w.run(held, event.timestamp + 2)
    assert arms(w.states()[-1])["1"]["n"] == 15


def test_shadow_pairs_score_the_challenger_and_only_the_newest_are_kept():
    w, bus = World(rollout=RolloutPolicy(strategy="shadow", sample_size=1000), shadow_pairs=4), Bus()
    event, rollout = start(bus, strategy="shadow")
    w.run(rollout, event.timestamp)
    assert {v: a["weight"] for v, a in arms(w.states()[-1]).items()} == {"1": 1.0, "2": 0.0}
    pairs = ev.ShadowPredicted(experiment="exp-1", champion_version="1", challenger_version="2",
                               prediction_ids=[f"p1-{i}" for i in range(8)], champion=[1] * 8,
                               challenger=[1, 0, 1, 0, 1, 1, 0, 0])
    labels = feedback(bus, "1", 8, 0)            # the champion answered all 8 right
    w.run(merge(bus.batch((T.shadow, pairs)), labels), event.timestamp + 1)
    state = arms(w.states()[-1])
    assert (state["1"]["n"], state["1"]["reward_sum"]) == (8, 8)
    # p1-4..p1-7 remembered (the newest 4): answers 1, 1, 0, 0 against label 1
    assert (state["2"]["n"], state["2"]["reward_sum"]) == (4, 2)


def test_feedback_of_another_experiment_or_none_is_not_counted():
    w, bus = World(), Bus()
    event, rollout = start(bus)
    w.run(rollout, event.timestamp)
    none = bus.batch((T.feedback, ev.FeedbackReceived(prediction_id="x", model_version="1", label=1,
                                                      prediction=1)))
    w.run(merge(feedback(bus, "2", 3, 0, experiment="exp-0"), none, feedback(bus, "3", 1, 0),
                feedback(bus, "2", 2, 0)), event.timestamp + 1)
    assert arms(w.states()[-1])["2"]["n"] == 2
    counts = {o: w.metric("loopline_experiment_feedback_total", outcome=o)
              for o in ("counted", "stale_experiment", "no_experiment", "unscored")}
    assert counts == {"counted": 2, "stale_experiment": 3, "no_experiment": 1, "unscored": 1}


def test_a_label_sent_twice_for_one_prediction_is_counted_once():
    """A client retrying after a timeout, or posting to two replicas, sends the same id twice."""
    w, bus = World(), Bus()
    event, rollout = start(bus)
    w.run(rollout, event.timestamp)
    w.run(feedback(bus, "2", 3, 0), event.timestamp + 1)
    w.run(merge(feedback(bus, "2", 3, 0), feedback(bus, "2", 1, 0, first=3)), event.timestamp + 2)
    assert arms(w.states()[-1])["2"]["n"] == 4
    assert w.metric("loopline_experiment_feedback_total", outcome="duplicate") == 3


def test_a_newer_rollout_supersedes_the_live_one():
    w, bus = World(), Bus()
    event, rollout = start(bus)
    w.run(rollout, event.timestamp)
    w.run(feedback(bus, "2", 3, 0), event.timestamp + 1)
    newer, batch = start(bus, experiment="exp-2", challengers=("3",))
    w.run(merge(batch, rollout), newer.timestamp)             # the old one redelivered after it
    state = w.states()[-1]
    assert state["experiment"] == "exp-2" and set(arms(state)) == {"1", "3"}


def test_a_live_state_is_published_again_after_a_minute_without_change():
    w, bus = World(), Bus()
    event, rollout = start(bus)
    t0 = event.timestamp
    w.run(rollout, t0)
    w.run(feedback(bus, "2", 3, 0), t0 + 1)
    published = len(w.states())
    w.run({}, t0 + 30)
    w.run({}, t0 + 60)
    assert len(w.states()) == published          # unchanged within the minute: nothing
    w.run({}, t0 + 61.5)
    assert len(w.states()) == published + 1
    assert w.states()[-1] == {**w.states()[-2], "offsets": w.states()[-1]["offsets"]}
