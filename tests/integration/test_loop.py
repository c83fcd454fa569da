"""The loop end to end: real broker, real worker process, real pipeline processes, real MLflow.

Events go in with kafka-python exactly as a producer of another team would send them; what the
tests assert is read back from the topics and from the MLflow registry.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from examples.classifier.data import batch
from devstack.stack import LocalStack
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from tests.integration.loop_harness import MODEL, data_event, outcome_of, write_config

pytestmark = [pytest.mark.slow, pytest.mark.last_broker]   # make test: on Apache Kafka


@pytest.fixture
def stack(tmp_path, bootstrap, prefix, request):
    config_kwargs = getattr(request, "param", {})
    config = write_config(tmp_path / "loopline.yaml", **config_kwargs)
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix,
                    partitions=2) as stack:
        yield stack


def registry(stack: LocalStack) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=stack.settings.tracking_uri,
                               registry_uri=stack.settings.tracking_uri)


def publish(stack: LocalStack, *events) -> None:
    with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
        for event in events:
            publisher.publish(event)


def wait_outcome(stack: LocalStack, request_id: str, timeout: float = 120):
    return stack.observer.wait_for(lambda o: outcome_of(o, request_id), timeout,
                                   f"the outcome of training request {request_id}")


def wait_requests(stack: LocalStack, count: int, timeout: float = 30):
    return stack.observer.wait_for(
        lambda o: len(o.of_type(ev.TrainingRequested.TYPE)) >= count and o.of_type(ev.TrainingRequested.TYPE),
        timeout, f"{count} training request(s)")


def test_data_arrival_ends_in_a_deployed_champion(stack, tmp_path):
    arrived = data_event(0, tmp_path / "data")
    publish(stack, arrived)

    request = wait_requests(stack, 1)[0]
    assert request.event.causationid == arrived.id
    assert request.data.data_versions == ["batch-00000"]
    done = wait_outcome(stack, request.event.id)

    assert done.event.type == ev.DeploymentDone.TYPE, done.data
    assert done.event.correlationid == arrived.id           # the chain is traceable from the topics
    client = registry(stack)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == done.data.version == "1"
    assert champion.tags["loopline.idempotency_key"] == request.data.idempotency_key
    assert champion.tags["loopline.gate"] == "passed"
    run = client.get_run(champion.run_id)
    assert run.data.tags["loopline.correlation_id"] == arrived.id
    assert "batch-00000" in run.data.tags["loopline.data_versions"]


def test_a_redelivered_event_trains_once(stack, tmp_path):
    arrived = data_event(0, tmp_path / "data")
    publish(stack, arrived, arrived)                         # same source and id, twice
    request = wait_requests(stack, 1)[0]
    publish(stack, request.event)                            # and the request itself, redelivered
    wait_outcome(stack, request.event.id)
    starts = stack.observer.wait_for(lambda o: len(o.of_type(ev.TrainingStarted.TYPE)) >= 2 and
                                     o.of_type(ev.TrainingStarted.TYPE), 30, "two start reports")

    # the trigger asked once (the second record on the topic is our redelivery of the same event)
    assert {d.event.id for d in stack.observer.of_type(ev.TrainingRequested.TYPE)} == {request.event.id}
    assert sorted(s.data.created for s in starts) == [False, True]
    assert len(list((stack.state_dir / "runs").iterdir())) == 1
    runs = registry(stack).search_runs(
        [e.experiment_id for e in registry(stack).search_experiments()],
        f"tags.`loopline.idempotency_key` = '{request.data.idempotency_key}' "
        "and tags.`loopline.step` = 'train'")
    assert len(runs) == 1
    assert len(registry(stack).search_model_versions(f"name = '{MODEL}'")) == 1


def test_a_worse_candidate_is_rejected_and_never_champion(stack, tmp_path):
    first = data_event(0, tmp_path / "data")
    publish(stack, first)
    assert wait_outcome(stack, wait_requests(stack, 1)[0].event.id).event.type == ev.DeploymentDone.TYPE

    # Train on labels that are noise; the holdout (the newest quarter) keeps the true labels,
    # so the candidate is measurably worse than the champion on the same rows.
    frame = batch(1, rows=800)
    rng = np.random.default_rng(1)
    frame.loc[: 599, "label"] = rng.integers(0, 2, 600)
    path = tmp_path / "data" / "noisy.parquet"
    frame.to_parquet(path, index=False)
    noisy = build(ev.DataArrived(uri=path.as_uri(), rows=800, version="noisy-1"), MODEL,
                  source="tests/data")
    publish(stack, noisy)
    outcome = wait_outcome(stack, wait_requests(stack, 2)[1].event.id)

    assert outcome.event.type == ev.ModelEvaluated.TYPE and not outcome.data.passed
    assert outcome.data.version == "2" and outcome.data.champion_version == "1"
    assert outcome.data.candidate_metrics["accuracy"] < outcome.data.champion_metrics["accuracy"]
    assert any("improve" in reason or ">=" in reason for reason in outcome.data.reasons)
    client = registry(stack)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert client.get_model_version(MODEL, "2").tags["loopline.gate"] == "rejected"
    assert not stack.observer.of_type(ev.ModelPromoted.TYPE)[1:]
