"""ArgoWorkflowLauncher with the real kubernetes client over HTTP against tests/k8s/fake_kube.py."""

from __future__ import annotations

import asyncio

import pytest

from agents.trainer import Trainer
from streams import events as ev
from tests.k8s.conftest import NAMESPACE, OWNER, launch_spec, phases, pod_settings, request_key, wait_for
from tests.k8s.controllers import node, wf_status, workflow_pod
from tests.k8s.fake_kube import WORKFLOWS
from tests.k8s.lifecycle import TrainerContext
from tests.k8s.schemas_check import validate_argo
from triggers.cluster import ArgoWorkflowLauncher
from triggers.pipeline import FAILED, RUNNING, SKIPPED, SUCCEEDED
from triggers.podspec import ANN_REPORTED


@pytest.fixture
def launcher(client):
    made = []

    def make():
        launcher = ArgoWorkflowLauncher(client, {"classifier": pod_settings()}, OWNER, watch_timeout=5)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.close()


def test_a_training_request_creates_exactly_one_workflow(fake, launcher):
    spec = launch_spec()
    assert launcher().submit(spec) is True
    workflows = fake.list(WORKFLOWS, NAMESPACE)
    assert [w["metadata"]["name"] for w in workflows] == [spec.run_name]
    assert fake.count("POST", "/workflows") == 1
    stored = workflows[0]
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        stored["metadata"].pop(key)
    validate_argo(stored)


def test_the_same_request_again_creates_none(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    assert runs.submit(spec) is True
    assert runs.submit(spec) is False
    assert launcher().submit(launch_spec(key=request_key(spec))) is False
    assert len(fake.list(WORKFLOWS, NAMESPACE)) == 1


def test_workflow_phases_become_statuses_with_outputs_and_skipped_steps(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    name = spec.run_name
    fake.set_status(WORKFLOWS, NAMESPACE, name, wf_status(name, "Running", [node(name, "prepare", "Running")]))
    wait_for(lambda: phases(runs.poll()).get(name) == RUNNING)
    fake.set_status(WORKFLOWS, NAMESPACE, name, wf_status(name, "Succeeded", [
        node(name, "prepare", "Succeeded", {"rows": 2000}),
        node(name, "train", "Succeeded", {"model_uri": "runs:/abc/model", "note": "costs $(HOME) $$"}),
        node(name, "evaluate", "Succeeded", {"accuracy": 0.82}),
        node(name, "publish", "Skipped", kind="Skipped", message="when 'false == true' evaluated false"),
    ]))
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == SUCCEEDED
    assert status.outputs["evaluate"] == {"accuracy": 0.82}
    assert status.outputs["train"]["note"] == "costs $(HOME) $$"
    assert status.steps == {"prepare": SUCCEEDED, "train": SUCCEEDED, "evaluate": SUCCEEDED, "publish": SKIPPED}
    assert status.finished_at - status.started_at == 600
    assert runs.spec(name) == spec


def test_failed_and_errored_workflows_carry_the_reason_and_the_failed_pods_log(fake, launcher):
    runs = launcher()
    failed, deadline = launch_spec(), launch_spec()
    runs.submit(failed)
    runs.submit(deadline)
    bad = node(failed.run_name, "train", "Failed", message="Error (exit code 3)")
    workflow_pod(fake, failed.run_name, bad, log="epoch 1\nCUDA out of memory")
    fake.set_status(WORKFLOWS, NAMESPACE, failed.run_name, wf_status(failed.run_name, "Failed", [
        node(failed.run_name, "prepare", "Succeeded", {}), bad], message="child 'train' failed"))
    fake.set_status(WORKFLOWS, NAMESPACE, deadline.run_name, wf_status(
        deadline.run_name, "Error", [node(deadline.run_name, "prepare", "Failed", message="Pod was active on the "
                                          "node longer than the specified deadline")],
        message="Step exceeded its deadline"))
    seen = {}
    wait_for(lambda: seen.update({s.run_name: s for s in runs.poll() if s.terminal}) or len(seen) == 2)
    assert seen[failed.run_name].phase == FAILED
    assert seen[failed.run_name].reason == "WorkflowFailed: child 'train' failed; step train: Error (exit code 3)"
    assert seen[failed.run_name].log_tail == ("epoch 1", "CUDA out of memory")
    assert seen[deadline.run_name].reason.startswith("DeadlineExceeded: Step exceeded its deadline")


def test_a_watch_disconnect_resumes_without_losing_a_phase_change(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    fake.set_status(WORKFLOWS, NAMESPACE, spec.run_name, wf_status(spec.run_name, "Running"))
    wait_for(lambda: phases(runs.poll()).get(spec.run_name) == RUNNING)
    watcher = runs._watchers[NAMESPACE]
    seen_version = int(watcher.resource_version)
    before = len(fake.watch_requests())
    fake.drop_watches()
    fake.set_status(WORKFLOWS, NAMESPACE, spec.run_name, wf_status(spec.run_name, "Succeeded"))
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == SUCCEEDED and watcher.lists == 1
    assert int(fake.watch_requests()[before]["resourceVersion"][0]) == seen_version


def test_410_gone_lists_again(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    fake.drop_watches()
    fake.set_status(WORKFLOWS, NAMESPACE, spec.run_name, wf_status(spec.run_name, "Failed", message="boom"))
    fake.compact()
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == FAILED and runs._watchers[NAMESPACE].lists >= 2


def test_the_trainer_watcher_publishes_succeeded_and_failed_events(fake, launcher):
    runs = launcher()
    ok, bad = launch_spec(), launch_spec()
    runs.submit(ok)
    runs.submit(bad)
    fake.set_status(WORKFLOWS, NAMESPACE, ok.run_name, wf_status(ok.run_name, "Succeeded", [
        node(ok.run_name, "evaluate", "Succeeded", {"candidate_version": "3", "accuracy": 0.91})]))
    fake.set_status(WORKFLOWS, NAMESPACE, bad.run_name, wf_status(bad.run_name, "Failed", [
        node(bad.run_name, "prepare", "Failed", message="Error (exit code 1)")], message="child failed"))
    ctx = TrainerContext({"argo": runs})
    trainer = Trainer(ctx, {})

    def watched():
        asyncio.run(trainer.watch())
        return len(ctx.published) == 2

    wait_for(watched)
    by_type = {type(data): data for data, _, _ in ctx.published}
    assert by_type[ev.TrainingSucceeded].idempotency_key == request_key(ok)
    assert by_type[ev.TrainingSucceeded].outputs["evaluate"] == {"candidate_version": "3", "accuracy": 0.91}
    assert by_type[ev.TrainingFailed].idempotency_key == request_key(bad)
    assert "step prepare: Error (exit code 1)" in by_type[ev.TrainingFailed].reason
    for name in (ok.run_name, bad.run_name):  # kept for the logs until Argo's ttlStrategy, annotated
        workflow = fake.get(WORKFLOWS, NAMESPACE, name)
        assert ANN_REPORTED in workflow["metadata"]["annotations"]
        assert workflow["spec"]["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert fake.count("PATCH", "/workflows/") == 2  # a merge patch: a custom resource takes no strategic one
    restarted = launcher()
    assert restarted.wait_synced() and restarted.poll() == []
