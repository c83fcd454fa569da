"""Two real trainings, a signed rollback, the serving endpoint, and `loopline lineage` on the result.

Real broker, worker, pipeline processes (the example classifier), MLflow and the serving
process. Version 1 is promoted by the gate, version 2 replaces it, an operator rolls back: the
champion alias goes back to 1 and the endpoint answers with it. Lineage of version 1 then names
the exact data event, request, run, data version, evaluation, promotion and both deployments,
from the topics and, with the topics out of the picture, from the version's tags alone.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import mlflow
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.classifier.data import batch
from devstack.stack import LocalStack
from streams import events as ev
from streams.publisher import Publisher
from tests.integration.loop_harness import MODEL, data_event, outcome_of, write_config
from tests.integration.operator_harness import ALICE, Cli, cli_env, write_keys

pytestmark = pytest.mark.slow


def predict_version(stack: LocalStack) -> str | None:
    rows = batch(0, rows=3).drop(columns=["label"]).to_dict(orient="records")
    request = urllib.request.Request(f"http://127.0.0.1:{stack.serve_port}/models/{MODEL}/predict",
                                     data=json.dumps({"rows": rows}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["version"]
    except OSError:
        return None                     # not up yet, or no champion loaded yet (404)


def wait_served(stack: LocalStack, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (served := predict_version(stack)) != version:
        stack.serving.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"serving answers with v{served}, not v{version}:\n{stack.serving.tail()}")
        time.sleep(0.3)


def train(stack: LocalStack, arrival, while_training=None) -> tuple:
    with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
        publisher.publish(arrival)
    request = stack.observer.wait_for(
        lambda o: [d for d in o.of_type(ev.TrainingRequested.TYPE) if d.event.causationid == arrival.id],
        30, "the training request")[0]
    if while_training is not None:
        while_training(request)
    done = stack.observer.wait_for(lambda o: outcome_of(o, request.event.id), 180,
                                   f"the outcome of {request.event.id}")
    assert done.event.type == ev.DeploymentDone.TYPE, done.data
    return request, done


def test_lineage_names_the_chain_and_rollback_serves_the_previous_version(tmp_path, bootstrap,
                                                                          monkeypatch, capsys):
    config = write_config(tmp_path / "loopline.yaml", min_new_rows=500, min_improvement=-1.0)
    keys = write_keys(tmp_path / "keys.yaml", ALICE)
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=LocalStack.unique_prefix(),
                    partitions=2, serving=True,
                    extra_env={"LOOPLINE_OPERATOR_KEYS": str(keys)}) as stack:
        cli, env = Cli(monkeypatch, capsys), cli_env(stack, keys)
        first, second = data_event(0, tmp_path / "data"), data_event(1, tmp_path / "data")
        request1, deployed1 = train(stack, first)
        assert deployed1.data.version == "1"

        def in_flight(request):
            stack.observer.wait_for(lambda o: [d for d in o.of_type(ev.TrainingStarted.TYPE)
                                               if d.event.causationid == request.event.id], 30, "start")
            flight = cli.json(env, "status", "--model", MODEL)["models"][MODEL]["in_flight"]
            ended = [d for t in (ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE)
                     for d in stack.observer.of_type(t) if d.data.idempotency_key == request.data.idempotency_key]
            if not ended:                  # (a very fast training may be over already)
                assert flight["request_id"] == request.event.id and flight["reason"] == "data"
                assert flight["run_name"] and flight["data_versions"] == ["batch-00001"]

        request2, deployed2 = train(stack, second, while_training=in_flight)
        assert deployed2.data.version == "2" and deployed2.data.previous_version == "1"
        wait_served(stack, "2")

        # --- rollback: dry run first, then for real --------------------------------------------
        commands = len(stack.observer.of_type(ev.OperatorCommand.TYPE))
        code, out = cli(env, "publish", "rollback", "--model", MODEL, "--reason", "v2 misbehaves", "--dry-run")
        assert code == 0 and "would: roll back champion v2 -> v1" in out, out
        assert len(stack.observer.of_type(ev.OperatorCommand.TYPE)) == commands
        code, out = cli(env, "publish", "rollback", "--model", MODEL, "--reason", "v2 misbehaves")
        assert code == 0, out
        command_id = out.split()[2]
        rolled = stack.observer.wait_for(
            lambda o: [d for d in o.of_type(ev.DeploymentRolledBack.TYPE) if d.event.causationid == command_id],
            30, "the rollback")[0]
        assert (rolled.data.version, rolled.data.from_version) == ("1", "2")
        client = mlflow.MlflowClient(tracking_uri=stack.settings.tracking_uri,
                                     registry_uri=stack.settings.tracking_uri)
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
        wait_served(stack, "1")

        # --- lineage of v1, from the topics and MLflow ------------------------------------------
        evaluated = next(d for d in stack.observer.of_type(ev.ModelEvaluated.TYPE) if d.data.version == "1")
        promoted = next(d for d in stack.observer.of_type(ev.ModelPromoted.TYPE) if d.data.version == "1")
        version = client.get_model_version(MODEL, "1")
        chain = cli.json(env, "lineage", MODEL, "1")
        assert [t["id"] for t in chain["triggers"]] == [first.id]
        assert chain["triggers"][0]["type"] == ev.DataArrived.TYPE
        assert chain["request"]["id"] == request1.event.id
        assert chain["request"]["idempotency_key"] == request1.data.idempotency_key
        assert chain["run"]["run_id"] == version.run_id
        assert chain["data_versions"] == ["batch-00000"] == chain["run"]["data_versions"]
        assert chain["evaluation"]["id"] == evaluated.event.id and chain["evaluation"]["passed"]
        assert chain["evaluation"]["candidate_metrics"]["accuracy"] > 0.6
        assert chain["promotion"]["id"] == promoted.event.id
        deployments = {d["id"]: d for d in chain["deployments"]}
        assert set(deployments) == {deployed1.event.id, rolled.event.id}
        assert deployments[deployed1.event.id]["cause"]["id"] == promoted.event.id
        cause = deployments[rolled.event.id]["cause"]
        assert (cause["id"], cause["operator"], cause["reason"]) == (command_id, "alice", "v2 misbehaves")
        assert [d["id"] for d in chain["retired"]] == [deployed2.event.id]

        # --- the same chain from the version's tags alone (topics past retention) -------------
        tags_only = cli.json(env, "lineage", MODEL, "1", "--no-topics")
        assert tags_only["sources"] == {"topics": False, "tags": True}
        assert [t["id"] for t in tags_only["triggers"]] == [first.id]
        assert tags_only["request"]["id"] == request1.event.id
        assert tags_only["run"]["run_id"] == version.run_id
        assert tags_only["data_versions"] == ["batch-00000"]
        assert tags_only["evaluation"]["id"] == evaluated.event.id
        assert tags_only["promotion"]["id"] == promoted.event.id
        assert {d["id"] for d in tags_only["deployments"]} == {deployed1.event.id, rolled.event.id}

        code, tree = cli(env, "lineage", MODEL, "1")
        assert code == 0
        for needle in (first.id, request1.event.id, version.run_id, "batch-00000", evaluated.event.id,
                       promoted.event.id, deployed1.event.id, rolled.event.id, command_id):
            assert needle in tree, needle

        # --- status and metrics agree -----------------------------------------------------------
        status = cli.json(env, "status")["models"][MODEL]
        assert status["champion"]["version"] == "1" and status["champion"]["gate"] == "passed"
        assert [p["version"] for p in status["previous"]] == ["2"]
        assert status["champion"]["metrics"]["accuracy"] > 0.6
        code, out = cli(env, "status")
        assert code == 0 and "consumer lag" in out, out
        assert re.search(r"champion\W+v1 ", out) and re.search(r"previous\W+v2 ", out), out
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.worker.web_port}/metrics", timeout=5) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        count = [s.value for s in families["loopline_data_to_deployment_seconds"].samples
                 if s.name.endswith("_count")]
        assert count == [2.0]          # two data-driven deployments; the rollback is not one
