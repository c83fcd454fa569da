"""Decisions on the record, end to end: real broker, real worker, a constant training step.

A batch too small to train on, and a drift signal while a training is in flight, start nothing:
each leaves a `DecisionRecorded` with the policy's reason on `decision.recorded`, and
`loopline why` on the drift event prints it. The training is held in flight by a first step
that waits for a file the test creates (no timing guess), then `bench.steps.trivial_train`
registers a constant model.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from devstack.stack import REPO, LocalStack
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from tests.integration.operator_harness import Cli
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

MODEL = "clf"
HOLD = ("import os, sys, time\nend = time.time() + 60\n"        # a step that waits for the test's file
        "while not os.path.exists(sys.argv[1]) and time.time() < end: time.sleep(0.05)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bootstrap):
    root = tmp_path_factory.mktemp("decisions")
    release = root / "release"
    steps = [{"name": "hold", "command": [sys.executable, "-c", HOLD, str(release)]},
             {"name": "train", "command": [sys.executable, "-m", "bench.steps.trivial_train"]}]
    config = root / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{
        "name": MODEL, "pipeline": {"launcher": "local", "workdir": str(REPO), "steps": steps},
        "retrain": {"min_new_rows": 1000}, "gate": {"metric": "accuracy", "from_step": "train"}}]}))
    with LocalStack(root / "state", config, bootstrap=bootstrap, prefix=LocalStack.unique_prefix(),
                    partitions=2) as s:
        s.release = release
        with Publisher(s.bootstrap, s.settings.topics) as bus:
            s.bus = bus
            yield s
            release.touch()               # a test that failed early: let the held run end


def send(stack, data: ev.EventData):
    event = build(data, MODEL, source="tests/decisions")
    stack.bus.publish(event)
    return event


def decision_on(stack, signal) -> ev.DecisionRecorded:
    found = wait_until(lambda: [d for d in stack.observer.of_type(ev.DecisionRecorded.TYPE)
                                if d.data.signal_id == signal.id], 30, f"the decision on {signal.type}")
    record = found[0]
    assert (record.event.subject, record.event.causationid) == (MODEL, signal.id)
    return record.data


def test_a_small_batch_and_a_drift_signal_in_flight_are_skipped_with_their_reasons(stack, monkeypatch, capsys):
    small = send(stack, ev.DataArrived(uri="file:///d/b0", rows=400, version="b0"))
    skipped = decision_on(stack, small)
    assert (skipped.policy, skipped.outcome, skipped.reason) == ("retrain", "skipped", "400/1000 new rows")

    enough = send(stack, ev.DataArrived(uri="file:///d/b1", rows=600, version="b1"))
    requested = decision_on(stack, enough)
    [request] = wait_until(lambda: [r for r in stack.observer.of_type(ev.TrainingRequested.TYPE)
                                    if r.event.causationid == enough.id], 30, "the training request")
    assert requested.outcome == "requested" and requested.request_id == request.event.id

    drift = send(stack, ev.DriftDetected(dataset_version="b1", reference_version="b0", drift_share=0.8))
    suppressed = decision_on(stack, drift)          # the first step holds the training in flight
    assert (suppressed.outcome, suppressed.reason) == ("suppressed", "training in flight; queued follow-up")
    assert suppressed.signal_type == ev.DriftDetected.TYPE

    cli, env = Cli(monkeypatch, capsys), stack.env()
    code, out = cli(env, "why", drift.id)
    assert code == 0, out
    assert "retrain → suppressed: training in flight; queued follow-up" in " ".join(out.split())
    answer = cli.json(env, "why", small.id)
    assert [(d["outcome"], d["reason"]) for d in answer["decisions"]] == [("skipped", "400/1000 new rows")]
    assert answer["effects"][0]["id"] == request.event.id       # it counted toward that request
    code, out = cli(env, "why", "no-such-event")
    assert code == 2 and "no event no-such-event" in out
    assert json.dumps(answer)                                   # plain JSON, for the page

    stack.release.touch()                 # the training ends; the queued drift signal had no new data
    [done] = wait_until(lambda: [d for d in stack.observer.of_type(ev.TrainingSucceeded.TYPE)
                                 if d.event.causationid == request.event.id], 60, "the training to end")
    finished = decision_on(stack, done.event)
    assert (finished.outcome, finished.reason) == (
        "skipped", "training succeeded; nothing queued; drift follow-up dropped: no new data since the last request")
