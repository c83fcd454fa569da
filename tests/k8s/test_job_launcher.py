"""KubernetesJobLauncher with the real kubernetes client over HTTP against tests/k8s/fake_kube.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.trainer import Trainer
from streams import events as ev
from tests.k8s.conftest import NAMESPACE, OWNER, launch_spec, phases, pod_settings, request_key, wait_for
from tests.k8s.controllers import complete, failed, job_pod, running
from tests.k8s.fake_kube import JOBS
from tests.k8s.lifecycle import TrainerContext
from tests.k8s.schemas_check import validate_k8s
from triggers.cluster import KubernetesJobLauncher
from triggers.pipeline import FAILED, RUNNING, SUCCEEDED
from triggers.podspec import ANN_REPORTED


@pytest.fixture
def launcher(client):
    made = []

    def make():
        launcher = KubernetesJobLauncher(client, {"classifier": pod_settings()}, OWNER, watch_timeout=5)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.close()


def test_a_training_request_creates_exactly_one_job(fake, launcher):
    spec = launch_spec()
    assert launcher().submit(spec) is True
    jobs = fake.list(JOBS, NAMESPACE)
    assert [j["metadata"]["name"] for j in jobs] == [spec.run_name]
    assert fake.count("POST", "/jobs") == 1
    stored = jobs[0]
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        stored["metadata"].pop(key)
    validate_k8s(stored)


def test_the_same_request_again_creates_none(fake, launcher):
    spec = launch_spec()
    first = launcher()
    assert first.submit(spec) is True
    assert first.submit(spec) is False  # 409 AlreadyExists counts as success
    assert launcher().submit(launch_spec(key=request_key(spec))) is False  # also after a worker restart
    assert len(fake.list(JOBS, NAMESPACE)) == 1
    assert fake.count("POST", "/jobs") == 3


def test_job_status_changes_become_succeeded_with_the_pods_outputs(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    wait_for(lambda: phases(runs.poll()).get(spec.run_name) == "Pending")
    fake.set_status(JOBS, NAMESPACE, spec.run_name, running())
    wait_for(lambda: phases(runs.poll()).get(spec.run_name) == RUNNING)
    job_pod(fake, spec.run_name, {"phase": SUCCEEDED, "steps": {"prepare": SUCCEEDED, "train": SUCCEEDED,
                                                                "evaluate": SUCCEEDED, "publish": "Skipped"},
                                  "outputs": {"evaluate": {"accuracy": 0.93}}})
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete())
    status = wait_for(lambda: next(iter(runs.poll()), None))
    assert (status.phase, status.outputs, status.steps["publish"]) == (SUCCEEDED, {"evaluate": {"accuracy": 0.93}},
                                                                      "Skipped")
    assert status.finished_at - status.started_at == 300
    assert runs.poll() == []  # reported once per change
    assert runs.spec(spec.run_name) == spec


def test_failed_jobs_carry_the_kubernetes_reason_the_step_and_the_log(fake, launcher):
    runs = launcher()
    backoff, deadline = launch_spec(), launch_spec()
    runs.submit(backoff)
    runs.submit(deadline)
    job_pod(fake, backoff.run_name, {"phase": FAILED, "reason": "step train exited with code 3"},
            log="\n".join(f"line {i}" for i in range(50)) + "\nTraceback: boom")
    fake.set_status(JOBS, NAMESPACE, backoff.run_name, failed())
    fake.set_status(JOBS, NAMESPACE, deadline.run_name,
                    failed("DeadlineExceeded", "Job was active longer than specified deadline"))
    seen = {}
    wait_for(lambda: seen.update({s.run_name: s for s in runs.poll() if s.terminal}) or len(seen) == 2)
    assert seen[backoff.run_name].reason == ("BackoffLimitExceeded: Job has reached the specified backoff limit: "
                                             "step train exited with code 3")
    assert seen[backoff.run_name].log_tail[-1] == "Traceback: boom" and len(seen[backoff.run_name].log_tail) == 20
    assert seen[deadline.run_name].reason.startswith("DeadlineExceeded: Job was active longer")


def test_a_reported_job_stays_annotated_and_is_never_returned_again_also_after_a_restart(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    fake.set_status(JOBS, NAMESPACE, spec.run_name, failed())
    wait_for(lambda: any(s.terminal for s in runs.poll()))
    runs.mark_reported(spec.run_name)
    job = fake.get(JOBS, NAMESPACE, spec.run_name)  # still there for `kubectl logs`, until its TTL
    assert job["metadata"]["annotations"][ANN_REPORTED].endswith("Z")
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert fake.count("PATCH", f"/jobs/{spec.run_name}") == 1 and fake.count("DELETE", "/jobs") == 0
    restarted = launcher()
    assert restarted.wait_synced()
    assert restarted.poll() == [] and runs.poll() == []


def test_a_watch_disconnect_resumes_without_losing_a_status_change(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    fake.set_status(JOBS, NAMESPACE, spec.run_name, running())
    wait_for(lambda: phases(runs.poll()).get(spec.run_name) == RUNNING)
    watcher = runs._watchers[NAMESPACE]
    seen_version = int(watcher.resource_version)
    watches_before = len(fake.watch_requests())
    fake.drop_watches()  # the connection is cut mid-stream ...
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete())  # ... and the Job finishes meanwhile
    change_version = int(fake.get(JOBS, NAMESPACE, spec.run_name)["metadata"]["resourceVersion"])
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == SUCCEEDED
    assert watcher.lists == 1  # resumed, not re-listed
    resumed = fake.watch_requests()[watches_before:]
    assert resumed and int(resumed[0]["resourceVersion"][0]) == seen_version < change_version


def test_410_gone_lists_again_and_loses_nothing(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    wait_for(lambda: runs.poll())
    fake.drop_watches()
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete())
    fake.compact()  # the change is no longer in the server's history: resuming must get 410
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == SUCCEEDED
    assert runs._watchers[NAMESPACE].lists >= 2


def test_a_job_deleted_before_it_finished_is_a_failure(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    wait_for(lambda: runs.poll())
    fake.delete(JOBS, NAMESPACE, spec.run_name)
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == FAILED and "deleted" in status.reason


def test_the_trainer_watcher_publishes_succeeded_and_failed_events(fake, launcher):
    runs = launcher()
    ok, bad = launch_spec(), launch_spec(reason="drift")
    runs.submit(ok)
    runs.submit(bad)
    job_pod(fake, ok.run_name, {"phase": SUCCEEDED,
                                "outputs": {"evaluate": {"candidate_version": "3", "accuracy": 0.9}}})
    job_pod(fake, bad.run_name, {"phase": FAILED, "reason": "step prepare exited with code 1"}, log="no data")
    fake.set_status(JOBS, NAMESPACE, ok.run_name, complete())
    fake.set_status(JOBS, NAMESPACE, bad.run_name, failed())
    ctx = TrainerContext({"kubernetes": runs})
    trainer = Trainer(ctx, {})

    def watched():
        asyncio.run(trainer.watch())
        return len(ctx.published) == 2

    wait_for(watched)
    by_type = {type(data): (data, model, cause) for data, model, cause in ctx.published}
    done, model, cause = by_type[ev.TrainingSucceeded]
    assert (done.idempotency_key, done.run_name, done.outputs) == (request_key(ok), ok.run_name,
                                                                  {"evaluate": {"candidate_version": "3", "accuracy": 0.9}})
    assert model == "classifier" and cause.id == json.loads(ok.env["LOOPLINE_REQUEST"])["id"]
    failure = by_type[ev.TrainingFailed][0]
    assert failure.idempotency_key == request_key(bad)
    assert failure.reason.startswith("BackoffLimitExceeded") and "step prepare" in failure.reason
    assert failure.log_tail == ["no data"]
    for name in (ok.run_name, bad.run_name):  # acknowledged: annotated, so a restart cannot report it again
        assert ANN_REPORTED in fake.get(JOBS, NAMESPACE, name)["metadata"]["annotations"]
    asyncio.run(trainer.watch())
    assert len(ctx.published) == 2
    assert fake.count("GET", "/pods") >= 2


def test_a_finished_job_removed_before_it_was_reported_is_still_reported(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete())
    wait_for(lambda: runs.status(spec.run_name) is not None and runs.status(spec.run_name).terminal)
    fake.delete(JOBS, NAMESPACE, spec.run_name)  # its TTL ran out (or kubectl delete) before the report
    status = wait_for(lambda: next((s for s in runs.poll() if s.terminal), None))
    assert status.phase == SUCCEEDED and runs.spec(spec.run_name) == spec


def test_a_run_another_worker_reported_is_dropped_by_every_watcher(fake, launcher):
    spec = launch_spec()
    other = launcher()
    other.submit(spec)
    assert fake.watch_requests() == []  # submitting alone never starts a watch
    assert other.wait_synced()  # e.g. a former leader: still watching
    reporter = launcher()
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete())
    wait_for(lambda: any(s.terminal for s in reporter.poll()))
    wait_for(lambda: other.status(spec.run_name) is not None and other.status(spec.run_name).terminal)
    reporter.mark_reported(spec.run_name)  # annotated by the reporter ...
    wait_for(lambda: other.status(spec.run_name) is None)  # ... so the other watcher drops it
    assert other.poll() == [] and reporter.poll() == []
