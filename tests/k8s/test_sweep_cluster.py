"""Sweep steps on a cluster: the trial Indexed Job (Job launcher) and the Argo fan-out, rendered
and checked against the real schemas, launched against the fake API server with the real client.
The trials themselves, run as pod processes against a real PostgreSQL study, are in
tests/integration/test_sweep_pods.py.
"""

from __future__ import annotations

import copy

import pytest

from tests.k8s.conftest import NAMESPACE, OWNER, launch_spec, pod_settings, wait_for
from tests.k8s.fake_kube import JOBS
from tests.k8s.schemas_check import validate_argo, validate_k8s
from triggers.cluster import KubernetesJobLauncher
from triggers.kube import KubeClient
from triggers.pipeline import PENDING, SUCCEEDED, Pipeline, Step
from triggers.podspec import LABEL_OWNER
from triggers.render_job import SWEEP_PODS_ENV, render_job
from triggers.render_sweep import LABEL_TRIALS_OF, render_trial_jobs, trial_job_name
from triggers.render_workflow import render_workflow, workflow_status

SWEEP = {"space": {"alpha": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
         "objective": "accuracy", "trials": 12, "parallelism": 3, "max_failed_trials": 2}


def sweep_pipeline() -> Pipeline:
    return Pipeline((
        Step("prepare", ("python", "-m", "examples.classifier.prepare")),
        Step("train", ("python", "-m", "examples.classifier.train", "--rows", "{{steps.prepare.outputs.rows}}"),
             depends=("prepare",), sweep=SWEEP, timeout_seconds=600),
        Step("evaluate", ("python", "-m", "examples.classifier.evaluate"), depends=("train",)),
        Step("publish", ("python", "-c", "print('publish')"), depends=("evaluate",),
             when="train.best_value >= 0.9"),
    ))


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def stored(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "namespace"):
        obj["metadata"].pop(key, None)
    return obj


# --- the Job launcher: the run's Job plus one trial Indexed Job per sweep step ---------------------


def test_the_trial_job_runs_one_trial_per_index_and_is_owned_by_the_run():
    spec = launch_spec(steps=sweep_pipeline())
    run = render_job(spec, pod_settings(), OWNER)
    run["metadata"]["uid"] = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
    (trials,) = render_trial_jobs(spec, pod_settings(), OWNER, run)
    validate_k8s(trials)
    validate_k8s(run)
    job = trials["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 12, 3)
    assert job["backoffLimitPerIndex"] == 3 and "backoffLimit" not in job    # max_failed_trials + 1
    assert trials["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": spec.run_name, "uid": run["metadata"]["uid"]}]
    # The watcher lists runs by the owner label: the trial Job has none, so it is never a run.
    assert LABEL_OWNER not in trials["metadata"]["labels"] and LABEL_OWNER in run["metadata"]["labels"]
    assert trials["metadata"]["labels"][LABEL_TRIALS_OF] == spec.run_name
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "triggers.pod_entry", "sweep-trial", "--step", "train"]
    assert container["image"] == pod_settings().image and container["resources"] == run["spec"]["template"][
        "spec"]["containers"][0]["resources"]
    # The run's pod waits for the trial pods; the trial pods do not wait for themselves.
    assert env_of(run["spec"]["template"]["spec"]["containers"][0])[SWEEP_PODS_ENV] == "pods"
    assert SWEEP_PODS_ENV not in env_of(container) and "LOOPLINE_TERMINATION_LOG" not in env_of(container)
    assert env_of(container)["LOOPLINE_IDEMPOTENCY_KEY"] == spec.env["LOOPLINE_IDEMPOTENCY_KEY"]


def test_a_run_without_a_sweep_has_no_trial_job_and_trial_job_names_fit_pod_hostnames():
    plain = launch_spec()
    assert render_trial_jobs(plain, pod_settings(), OWNER) == []
    assert SWEEP_PODS_ENV not in env_of(render_job(plain, pod_settings(), OWNER)["spec"]["template"]["spec"][
        "containers"][0])
    long_run = "m" * 63
    names = {trial_job_name(long_run, step) for step in ("train", "tune")}
    assert len(names) == 2 and all(len(n) + len("-99999") <= 63 for n in names)


@pytest.fixture
def jobs(fake):
    made = []

    def make() -> KubernetesJobLauncher:
        client = KubeClient.for_host(fake.url)
        made.append(KubernetesJobLauncher(client, {"classifier": pod_settings()}, OWNER, watch_timeout=5))
        return made[-1]

    yield make
    for launcher in made:
        launcher.close()


def test_a_sweep_run_creates_its_job_and_trial_job_once_and_reports_one_run(fake, jobs):
    spec = launch_spec(steps=sweep_pipeline())
    runs = jobs()
    assert runs.submit(spec) is True
    run = fake.get(JOBS, NAMESPACE, spec.run_name)
    trials = fake.get(JOBS, NAMESPACE, trial_job_name(spec.run_name, "train"))
    validate_k8s(stored(run))
    validate_k8s(stored(trials))
    assert trials["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert runs.submit(spec) is False                          # redelivered: 409 on both, nothing new
    assert fake.count("POST", "/jobs") == 4 and len(fake.list(JOBS, NAMESPACE)) == 2
    # A submit that died between the two creates: the redelivery still makes the trial Job.
    fake.delete(JOBS, NAMESPACE, trials["metadata"]["name"])
    assert jobs().submit(spec) is False
    assert fake.get(JOBS, NAMESPACE, trials["metadata"]["name"])["metadata"]["ownerReferences"][0]["uid"] == \
        run["metadata"]["uid"]
    # Both Jobs finish; the watcher reports the run once, and never the trial Job.
    assert runs.wait_synced()
    complete = {"startTime": "2026-01-01T10:00:00Z", "completionTime": "2026-01-01T10:05:00Z", "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}]}
    fake.set_status(JOBS, NAMESPACE, trials["metadata"]["name"], {**complete, "succeeded": 12})
    fake.set_status(JOBS, NAMESPACE, spec.run_name, complete)
    reported = wait_for(lambda: [s for s in runs.poll() if s.terminal])
    assert [(s.run_name, s.phase) for s in reported] == [(spec.run_name, SUCCEEDED)]


# --- Argo: open, the trials' fan-out, close ---------------------------------------------------


def test_argo_fans_the_trials_out_between_open_and_close():
    spec = launch_spec(steps=sweep_pipeline())
    wf = render_workflow(spec, pod_settings(), OWNER)
    validate_argo(wf)
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    tasks = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    assert list(tasks) == ["prepare", "train-sweep-open", "train-sweep-trials", "train", "evaluate", "publish"]
    # open takes the step's place: its dependencies and its inputs
    assert tasks["train-sweep-open"]["depends"] == "prepare.Succeeded"
    assert templates["sweep-open-train"]["container"]["args"] == [
        "sweep-open", "--step", "train", "--input", "prepare={{inputs.parameters.outputs-prepare}}"]
    # the fan-out: one pod per trial, at most `parallelism` at once, a dead pod retried
    assert tasks["train-sweep-trials"] == {"name": "train-sweep-trials", "template": "sweep-trials-train",
                                           "depends": "train-sweep-open.Succeeded", "continueOn": {"failed": True}}
    fan_out = templates["sweep-trials-train"]
    assert fan_out["parallelism"] == 3
    (trial_task,) = fan_out["dag"]["tasks"]
    assert trial_task["withSequence"] == {"count": "12"}
    trial = templates[trial_task["template"]]
    assert trial["container"]["args"] == ["sweep-trial", "--step", "train", "--index", "{{inputs.parameters.index}}"]
    assert trial["retryStrategy"] == {"limit": 3, "retryPolicy": "OnFailure"}
    # close is the step itself: downstream reads `train` as for any step, and the close decides
    assert tasks["train"]["depends"] == "(train-sweep-trials.Succeeded || train-sweep-trials.Failed)"
    close = templates["step-train"]
    assert close["container"]["args"] == ["sweep-close", "--step", "train"]
    assert {p["name"] for p in close["outputs"]["parameters"]} == {"outputs", "when-publish"}
    assert {"name": "outputs-train", "value": "{{tasks.train.outputs.parameters.outputs}}"} in \
        tasks["evaluate"]["arguments"]["parameters"]
    assert tasks["publish"]["when"] == "{{tasks.train.outputs.parameters.when-publish}} == true"


def test_argo_status_lists_the_pipelines_steps_not_the_sweeps_tasks():
    spec = launch_spec(steps=sweep_pipeline())
    wf = render_workflow(spec, pod_settings(), OWNER)
    wf["status"] = {"phase": "Running", "startedAt": "2026-01-01T10:00:00Z", "nodes": {
        "n1": {"displayName": "prepare", "type": "Pod", "phase": "Succeeded"},
        "n2": {"displayName": "train-sweep-open", "type": "Pod", "phase": "Succeeded"},
        "n3": {"displayName": "train-sweep-trials", "type": "DAG", "phase": "Running"},
        "n4": {"displayName": "trial(0:0)", "type": "Retry", "phase": "Running"},
    }}
    status = workflow_status(wf)
    assert status.steps == {"prepare": SUCCEEDED, "train": PENDING, "evaluate": PENDING, "publish": PENDING}
