"""SIGKILL the worker at the worst moments, restart it, and check that the loop finished anyway.

Each crash point sits between a side effect and its acknowledgement (agents/faults.py): the
training request stored in the trigger's outbox but not published; published but the outbox
not emptied; the run launched but not announced; the evaluation announced but not the
promotion; the alias moved but not the deployment. After a restart the redelivered events must
complete the cut work exactly once. What the killed worker left on the broker is read before
the restart: it must show the point's side effect done and its acknowledgement not (so the
worker died at that point, not anywhere else), and a point's own check can say what the
restart did with it.

The pipeline is the cheapest one with the contract the agents read (tests/faults/steps): `train`
registers a constant pyfunc model as a new MLflow version, with the request's lineage tags,
reusing it on a relaunch; `evaluate` reports the gate metric for it. What is under test is the
worker around the run (request, launch, outcome, evaluation, promotion, alias, deployment), not
the example classifier, which tests/integration/test_example_pipeline.py runs.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from agents.trigger import OUTBOX, state_changelog
from devstack.stack import LocalStack
from loopline.commands.snapshot import read_records
from streams import events as ev
from streams.codec import decode
from streams.envelope import CloudEvent
from streams.publisher import Publisher
from tests.faults.invariants import assert_nothing_lost_nothing_doubled, launches
from tests.integration.loop_harness import MODEL, data_event, write_config

pytestmark = pytest.mark.slow

# ~2 s of run (the `import mlflow` of one step) instead of the example's ~10 s of prepare, train
# and evaluate, each importing scikit-learn, pandas and MLflow.
STEPS = [
    {"name": "train", "command": ["python", "-m", "tests.faults.steps.train"]},
    {"name": "evaluate", "command": ["python", "-m", "tests.faults.steps.evaluate"], "depends": ["train"]},
]
LATER_ROLES = ("training", "evaluation", "promotion", "deployment")   # what follows the request


def wait_killed(process, timeout: float = 120.0) -> None:
    process.proc.wait(timeout)
    assert process.proc.returncode == -signal.SIGKILL, process.tail()


@dataclass(frozen=True)
class Left:
    """What a killed worker left: on the broker, in the run directories, in the registry."""
    requests: list[CloudEvent]      # the training requests published
    stored: dict                    # the trigger's last stored value for MODEL (its outbox too)
    published: set[str]             # types of the events published after the requests
    runs: int                       # runs launched (run directories)
    champion: str | None            # the version the champion alias points at


def left_by(stack: LocalStack) -> Left:
    topics, changelog = stack.settings.topics, state_changelog(stack.settings.group)
    later = [getattr(topics, role) for role in LATER_ROLES]
    records = read_records(stack.bootstrap, [topics.training_requests, changelog, *later])   # one pass
    requests = [decode(r.value, r.headers).event for r in records if r.topic == topics.training_requests]
    stored = [r.value for r in records if r.topic == changelog
              and r.key is not None and r.key.decode().strip('"') == MODEL]   # Faust's key: JSON or raw
    published = {decode(r.value, r.headers).event.type for r in records if r.topic in later}
    runs_dir = stack.state_dir / "runs"
    runs = len([p for p in runs_dir.iterdir() if p.is_dir()]) if runs_dir.exists() else 0
    client = mlflow.MlflowClient(stack.settings.tracking_uri, stack.settings.tracking_uri)
    try:
        champion = client.get_registered_model(MODEL).aliases.get("champion")
    except MlflowException:
        champion = None                                  # nothing registered yet
    return Left(requests, json.loads(stored[-1]) if stored and stored[-1] else {}, published, runs,
                None if champion is None else str(champion))


# What the worker left at each later crash point: the side effect done, its acknowledgement not.
# (The trigger's two points are checked by their AFTER_RESTART checks below.)
def cut_after_the_launch(left: Left) -> None:
    assert left.runs == 1, "the run was not launched before the crash point"
    assert not left.published, f"published before the crash point: {left.published}"


def cut_after_the_evaluation(left: Left) -> None:
    assert left.published == {ev.TrainingStarted.TYPE, ev.TrainingSucceeded.TYPE, ev.ModelEvaluated.TYPE}, \
        left.published
    assert left.champion is None


def cut_after_the_alias(left: Left) -> None:
    assert left.champion == "1", "the alias had not moved at the crash point"
    assert ev.ModelPromoted.TYPE in left.published and ev.DeploymentDone.TYPE not in left.published, \
        left.published


CUT = {"trainer.submitted": cut_after_the_launch,
       "evaluator.evaluated": cut_after_the_evaluation,
       "deployer.alias-moved": cut_after_the_alias}


def sent_once_from_the_outbox(left: Left, observer) -> None:
    """Killed with the request stored and not published: the restarted worker publishes the
    stored request itself (same event id, same key), once, and it launches the run."""
    assert left.requests == [], "a request was out before the crash point"
    stored = left.stored[OUTBOX]
    [request] = observer.of_type(ev.TrainingRequested.TYPE)
    assert request.event.id == stored["id"] and request.event.data == stored["data"]
    # One run. The trainer may see the request twice (at-least-once: a rebalance as the
    # restarted worker joins can redeliver it before its offset is committed); a second
    # launch finds the run (created: false), which is the guarantee.
    [(key, created)] = launches(observer).items()
    assert key == stored["data"]["idempotency_key"] and created.count(True) == 1, created


def sent_again_without_a_second_run(left: Left, observer) -> None:
    """Killed with the request published and still in the outbox: the restarted worker sends it
    again (same event id, same key), and the trainer finds the run the first one launched."""
    [out] = left.requests
    assert left.stored[OUTBOX]["id"] == out.id, "the outbox was emptied before the crash point"
    observer.wait_for(lambda o: len(o.of_type(ev.TrainingStarted.TYPE)) >= 2, 60,
                      "the trainer's answer to the request sent again")
    requests = observer.of_type(ev.TrainingRequested.TYPE)
    assert len(requests) >= 2 and {d.event.id for d in requests} == {out.id}
    [(key, created)] = launches(observer).items()
    assert key == out.data["idempotency_key"]
    assert created.count(True) == 1 and False in created, created


AFTER_RESTART = {"trigger.outbox-flushed": sent_once_from_the_outbox,
                 "trigger.request-published": sent_again_without_a_second_run}


@pytest.mark.parametrize("point", ["trigger.outbox-flushed", "trigger.request-published",
                                   "trainer.submitted", "evaluator.evaluated", "deployer.alias-moved"])
def test_a_crash_at_the_worst_moment_loses_nothing_and_doubles_nothing(point, tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml", steps=STEPS)
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    extra_env={"LOOPLINE_CRASH_AT": point}) as stack:
        arrived = data_event(0, tmp_path / "data")
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            publisher.publish(arrived)
        wait_killed(stack.worker)
        left = left_by(stack)
        if point in CUT:
            CUT[point](left)
        stack.restart_worker(LOOPLINE_CRASH_AT="")
        done = stack.observer.wait_for(lambda o: o.of_type(ev.DeploymentDone.TYPE), 180,
                                       f"the deployment after a crash at {point}")[0]

        observer = stack.observer
        assert_nothing_lost_nothing_doubled(observer, {arrived.key}, stack.state_dir / "runs")
        client = mlflow.MlflowClient(stack.settings.tracking_uri, stack.settings.tracking_uri)
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert len(versions) == 1, "one training, one registered version"
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert str(champion.version) == done.data.version == "1"
        assert champion.tags["loopline.gate"] == "passed"
        history = client.get_registered_model(MODEL).tags["loopline.champion.history"]
        assert history == '["1"]', "the alias moved once"
        # every deployment announced names the same version: a replay re-announces, never re-decides
        assert {d.data.version for d in observer.of_type(ev.DeploymentDone.TYPE)} == {"1"}
        assert not observer.of_type(ev.DeploymentRefused.TYPE)
        if point in AFTER_RESTART:
            AFTER_RESTART[point](left, observer)
        stack.worker.kill()     # all checked; its graceful stop (~4 s) is not what this test is about
