"""Jobs that crash, hang, or exit 0 without a model, end to end through the worker."""

from __future__ import annotations

import pytest

from devstack.stack import LocalStack
from streams import events as ev
from streams.publisher import Publisher
from tests.integration.loop_harness import data_event, write_config

pytestmark = pytest.mark.slow

CRASHING = {"name": "evaluate", "retries": 2, "retry_backoff_seconds": 0.2,
            "command": ["python", "-c", "import sys; print('boom: out of memory'); sys.exit(137)"]}
HANGING = {"name": "evaluate", "timeout_seconds": 1,
           "command": ["python", "-c", "import time; print('working'); time.sleep(60)"]}
NO_MODEL = {"name": "evaluate", "command": ["python", "-c", "print('trained, but logged nothing')"]}


@pytest.mark.parametrize("step, reason", [
    pytest.param(CRASHING, "step evaluate exited with code 137 (after 3 attempts)", id="crash-retried"),
    pytest.param(HANGING, "DeadlineExceeded: step evaluate ran past 1s", id="deadline"),
    pytest.param(NO_MODEL, "registered no model version", id="exit-0-without-a-model"),
])
def test_a_failing_job_is_reported_with_its_reason_and_the_model_can_train_again(
        step, reason, tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml", steps=[step])
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix,
                    partitions=2) as stack:
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            publisher.publish(data_event(0, tmp_path / "data"))
            failed = stack.observer.wait_for(lambda o: o.of_type(ev.TrainingFailed.TYPE), 60,
                                             "the failure")[0]
            publisher.publish(data_event(1, tmp_path / "data"))       # not stuck "in flight"
            stack.observer.wait_for(lambda o: len(o.of_type(ev.TrainingRequested.TYPE)) >= 2, 30,
                                    "a new request after the failure")

        assert reason in failed.data.reason
        if step is CRASHING:
            assert failed.data.log_tail[-1] == "boom: out of memory"
        assert not stack.observer.of_type(ev.TrainingSucceeded.TYPE)
        assert not stack.observer.of_type(ev.ModelPromoted.TYPE)
