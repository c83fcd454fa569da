"""`loopline lineage`'s chain, built from events and tags (pure: no broker, no MLflow)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from loopline.commands import lineage
from loopline.commands.snapshot import Record, Seen
from streams import events as ev
from streams.codec import build, decode

MODEL = "clf"
w = "loopline/worker"


def seen(events) -> list[Seen]:
    return [Seen(Record("t", 0, i, 0.0, MODEL.encode(), e.to_json()), decode(e.to_json()))
            for i, e in enumerate(events)]


def chain_events():
    """data -> request -> started -> succeeded -> evaluated -> promoted -> deployed; then a
    second version replaces it, and an operator rolls back to it."""
    data = build(ev.DataArrived(uri="file:///b0", rows=500, version="batch-00000"), MODEL, source="tests/data")
    request = build(ev.TrainingRequested(idempotency_key="key1", reason="data", causes=[data.key],
                                         data_uris=["file:///b0"], data_versions=["batch-00000"], rows=500),
                    MODEL, source=w, cause=data)
    started = build(ev.TrainingStarted(idempotency_key="key1", run_name="clf-1", launcher="local"),
                    MODEL, source=w, cause=request)
    succeeded = build(ev.TrainingSucceeded(idempotency_key="key1", run_name="clf-1", duration_seconds=9.0),
                      MODEL, source=w, cause=request)
    evaluated = build(ev.ModelEvaluated(version="1", run_name="clf-1", metric="accuracy",
                                        candidate_metrics={"accuracy": 0.9}, passed=True,
                                        reasons=["accuracy 0.9 >= 0.6"]), MODEL, source=w, cause=succeeded)
    promoted = build(ev.ModelPromoted(version="1"), MODEL, source=w, cause=succeeded)
    deployed = build(ev.DeploymentDone(version="1", reason="promotion"), MODEL, source=w, cause=promoted)
    replaced = build(ev.DeploymentDone(version="2", previous_version="1", reason="promotion"), MODEL, source=w)
    command = build(ev.OperatorCommand(command="rollback", reason="v2 is bad", operator="alice"),
                    MODEL, source="loopline/cli/alice")
    rolled = build(ev.DeploymentRolledBack(version="1", from_version="2", reason="manual rollback"),
                   MODEL, source=w, cause=command)
    other = build(ev.DeploymentDone(version="1", reason="other model"), "other", source=w)
    return locals()


def tags_of(e) -> dict[str, str]:
    """What the job, the evaluator and the deployer write on version 1."""
    return {"loopline.idempotency_key": "key1", "loopline.correlation_id": e["data"].id,
            "loopline.run_name": "clf-1", "loopline.data_versions": "batch-00000",
            "loopline.gate": "passed", "loopline.gate.reasons": "accuracy 0.9 >= 0.6",
            "loopline.lineage.request_id": e["request"].id,
            "loopline.lineage.trigger_events": json.dumps([e["data"].key]),
            "loopline.lineage.training_event_id": e["succeeded"].id,
            "loopline.lineage.evaluated_event_id": e["evaluated"].id,
            "loopline.lineage.promoted_event_id": e["promoted"].id,
            "loopline.lineage.deployment_event_ids": json.dumps([e["deployed"].id, e["rolled"].id])}


RUN = {"run_id": "run-abc", "link": "runs:/run-abc",
       "tags": {"loopline.causation_id": "ignored-when-tagged", "loopline.data_versions": "batch-00000"},
       "metrics": {"eval_candidate_accuracy": 0.9, "train_accuracy": 0.95}}


def test_the_chain_from_the_topics_names_every_id():
    e = chain_events()
    chain = lineage.build(MODEL, "1", tags_of(e), RUN, seen(e.values()))
    assert chain["sources"] == {"topics": True, "tags": True}
    assert [(t["id"], t["type"]) for t in chain["triggers"]] == [(e["data"].id, ev.DataArrived.TYPE)]
    assert chain["request"]["id"] == e["request"].id and chain["request"]["reason"] == "data"
    assert [s["id"] for s in chain["training"]["started"]] == [e["started"].id]
    assert [s["id"] for s in chain["training"]["finished"]] == [e["succeeded"].id]
    assert chain["run"]["run_id"] == "run-abc" and chain["run"]["metrics"] == {"eval_candidate_accuracy": 0.9}
    assert chain["data_versions"] == ["batch-00000"]
    assert chain["evaluation"]["id"] == e["evaluated"].id and chain["evaluation"]["candidate_metrics"] == {"accuracy": 0.9}
    assert chain["promotion"]["id"] == e["promoted"].id
    deployments = {d["id"]: d for d in chain["deployments"]}
    assert list(deployments) == [e["deployed"].id, e["rolled"].id]             # other models left out
    assert deployments[e["deployed"].id]["cause"]["id"] == e["promoted"].id
    cause = deployments[e["rolled"].id]["cause"]
    assert (cause["id"], cause["operator"], cause["command"], cause["reason"]) == (
        e["command"].id, "alice", "rollback", "v2 is bad")
    assert [d["id"] for d in chain["retired"]] == [e["replaced"].id]


def test_after_retention_the_tags_alone_still_name_the_chain():
    e = chain_events()
    chain = lineage.build(MODEL, "1", tags_of(e), RUN, events=[])
    assert chain["sources"] == {"topics": False, "tags": True}
    assert [(t["id"], t["source"]) for t in chain["triggers"]] == [(e["data"].id, "tests/data")]
    assert chain["request"] == {"id": e["request"].id, "idempotency_key": "key1"}
    assert chain["training"]["finished"] == [{"id": e["succeeded"].id}]
    assert chain["data_versions"] == ["batch-00000"]
    assert chain["evaluation"]["id"] == e["evaluated"].id and chain["evaluation"]["passed"]
    assert chain["promotion"] == {"id": e["promoted"].id}
    assert [d["id"] for d in chain["deployments"]] == [e["deployed"].id, e["rolled"].id]


def test_a_version_registered_by_a_plain_job_falls_back_to_its_run_tags():
    e = chain_events()
    run = dict(RUN, tags={"loopline.causation_id": e["request"].id, "loopline.idempotency_key": "key1"})
    chain = lineage.build(MODEL, "1", {}, run, seen(e.values()))
    assert chain["request"]["id"] == e["request"].id
    assert [t["id"] for t in chain["triggers"]] == [e["data"].id]


def test_the_tree_shows_the_ids():
    e = chain_events()
    out = io.StringIO()
    lineage.show(lineage.build(MODEL, "1", tags_of(e), RUN, seen(e.values())),
                 Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    for event in ("data", "request", "succeeded", "evaluated", "promoted", "deployed", "rolled", "command"):
        assert e[event].id in text, event
    assert "run-abc" in text and "batch-00000" in text



def test_a_versions_rollout_and_its_analyses_are_in_its_lineage():
    e = chain_events()
    started = build(ev.RolloutStarted(experiment="clf-v1-0a1b", strategy="canary", champion_version="0",
                                      challenger_versions=["1"]), MODEL, source=w)
    other = build(ev.RolloutStarted(experiment="clf-v2-9f8e", strategy="canary", champion_version="1",
                                    challenger_versions=["2"]), MODEL, source=w)
    verdict = build(ev.RolloutAnalysed(experiment="clf-v1-0a1b", step=1, verdict="successful", action="promote",
                                       version="1", weight=1.0, test="Bayesian P(challenger > champion)",
                                       numbers={"p_better": 0.99}, reason="P(v1 better) 0.99 >= 0.95"),
                    MODEL, source=w)
    chain = lineage.build(MODEL, "1", tags_of(e), RUN, seen([*e.values(), started, other, verdict]))
    [rollout] = chain["rollouts"]
    assert rollout["experiment"] == "clf-v1-0a1b" and rollout["champion_version"] == "0"
    assert [(a["verdict"], a["action"], a["numbers"]) for a in rollout["analyses"]] == [
        ("successful", "promote", {"p_better": 0.99})]
    out = io.StringIO()
    lineage.show(chain, Console(file=out, width=200, color_system=None))
    assert "canary rollout clf-v1-0a1b against v0" in out.getvalue()
    assert "step 1: successful → promote: P(v1 better) 0.99 >= 0.95" in out.getvalue()


# --- the tags: written by the job and the registry adapter, read here ----------------------------

class VersionTags:
    """The slice of MlflowClient that `MlflowRegistry.record_lineage` uses, on one version."""

    def __init__(self):
        self.tags: dict[str, str] = {}

    def get_model_version(self, model, version):
        return type("ModelVersion", (), {"tags": dict(self.tags)})

    def set_model_version_tag(self, model, version, key, value):
        self.tags[key] = value


def test_what_the_job_and_the_agents_tag_a_version_with_is_what_lineage_reads(tmp_path):
    from adapters.registry import MlflowRegistry
    from stepkit.job import context

    e = chain_events()
    ctx = context({"LOOPLINE_STEP": "train", "LOOPLINE_RUN_NAME": "clf-1", "LOOPLINE_MODEL": MODEL,
                   "LOOPLINE_OUTPUTS": str(tmp_path / "out.json"), "LOOPLINE_IDEMPOTENCY_KEY": "key1",
                   "LOOPLINE_STATE_DIR": str(tmp_path), "LOOPLINE_REQUEST": e["request"].to_json().decode()})
    client = VersionTags()
    client.tags.update(ctx.version_tags())
    registry = MlflowRegistry("", client=client)
    registry.record_lineage(MODEL, "1", {"evaluated_event_id": e["evaluated"].id})
    for deployment in (e["deployed"], e["rolled"]):
        registry.record_lineage(MODEL, "1", {}, append={"deployment_event_ids": deployment.id})

    chain = lineage.build(MODEL, "1", client.tags, RUN, events=[])
    assert chain["request"]["id"] == e["request"].id
    assert [t["key"] for t in chain["triggers"]] == [e["data"].key]
    assert chain["evaluation"]["id"] == e["evaluated"].id
    assert [d["id"] for d in chain["deployments"]] == [e["deployed"].id, e["rolled"].id]
    # MLflow keeps these names: a rename would orphan every version tagged before it.
    assert {"loopline.lineage.request_id", "loopline.lineage.trigger_events",
            "loopline.lineage.evaluated_event_id", "loopline.lineage.deployment_event_ids"} <= set(client.tags)


@pytest.mark.parametrize("raw", [None, "", "not json", '{"a": 1}', "42"])
def test_a_list_tag_that_is_missing_or_mangled_reads_as_empty(raw):
    from stepkit.lineage import json_list

    assert json_list(raw) == []
