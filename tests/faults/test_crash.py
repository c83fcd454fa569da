"""SIGKILL the worker at the worst moments, restart it, and check that the loop finished anyway.

Each crash point sits between a side effect and its acknowledgement (agents/faults.py): the
run launched but not announced; the evaluation announced but not the promotion; the alias
moved but not the deployment. After a restart the redelivered events must complete the cut
work exactly once.
"""

from __future__ import annotations

import signal

import mlflow
import pytest

from devstack.stack import LocalStack
from streams import events as ev
from streams.publisher import Publisher
from tests.faults.invariants import assert_nothing_lost_nothing_doubled
from tests.integration.loop_harness import MODEL, data_event, write_config

pytestmark = pytest.mark.slow


def wait_killed(process, timeout: float = 120.0) -> None:
    process.proc.wait(timeout)
    assert process.proc.returncode == -signal.SIGKILL, process.tail()


@pytest.mark.parametrize("point", ["trainer.submitted", "evaluator.evaluated", "deployer.alias-moved"])
def test_a_crash_at_the_worst_moment_loses_nothing_and_doubles_nothing(point, tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml")
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    extra_env={"LOOPLINE_CRASH_AT": point}) as stack:
        arrived = data_event(0, tmp_path / "data")
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            publisher.publish(arrived)
        wait_killed(stack.worker)
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
