"""The dedupe record and the trigger's state live in changelogged tables: a restarted worker
still knows which events it has seen, and what was in flight."""

from __future__ import annotations

import pytest

from devstack.stack import LocalStack
from streams import events as ev
from streams.publisher import Publisher
from tests.integration.loop_harness import data_event, write_config

pytestmark = [pytest.mark.slow, pytest.mark.last_broker]   # make test: on Apache Kafka

FAIL_FAST = [{"name": "evaluate", "command": ["python", "-c", "raise SystemExit(1)"]}]


def test_dedupe_survives_a_worker_restart(tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml", steps=FAIL_FAST)
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix,
                    partitions=2) as stack:
        first = data_event(0, tmp_path / "data")
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            publisher.publish(first)
            stack.observer.wait_for(lambda o: o.of_type(ev.TrainingFailed.TYPE), 60, "the first outcome")
            stack.restart_worker()                               # graceful: offsets committed
            stack.restart_worker()                               # and again, recovering from changelog only
            publisher.publish(first)                             # redelivered after two restarts
            second = data_event(1, tmp_path / "data")
            publisher.publish(second)
            # `second` is behind the redelivered `first` on the model's partition: once its request
            # is out and launched, a wrong request for `first` would have been published before it.
            request = stack.observer.wait_for(
                lambda o: [r for r in o.of_type(ev.TrainingRequested.TYPE) if second.key in r.data.causes],
                60, "the request for the new batch")[0]
            stack.observer.wait_for(
                lambda o: [s for s in o.of_type(ev.TrainingStarted.TYPE)
                           if s.data.idempotency_key == request.data.idempotency_key], 60, "its launch")

        requests = stack.observer.of_type(ev.TrainingRequested.TYPE)
        assert [r.data.causes for r in requests] == [[first.key], [second.key]]
        assert len(list((stack.state_dir / "runs").iterdir())) == 2
