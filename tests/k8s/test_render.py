"""The pure renderers: every Job and Workflow validates against the real schemas, and says what it must."""

from __future__ import annotations

import base64
import json

import pytest

from tests.k8s.conftest import NASTY, OWNER, launch_spec, pipeline, pod_settings
from tests.k8s.schemas_check import validate_argo, validate_k8s
from triggers.naming import run_name
from triggers.pipeline import Pipeline, Step
from triggers.podspec import LABEL_MODEL, LABEL_REQUEST, PodSettings, RenderError, spec_from_annotations
from triggers.render_job import render_job
from triggers.render_workflow import render_workflow

MINIMAL = PodSettings(namespace="default", image="loopline:dev")
SETTINGS = {
    "minimal": MINIMAL,
    "full": pod_settings(),
    "no-ttl-no-deadline": pod_settings(ttl_seconds_after_finished=None, active_deadline_seconds=None,
                                       backoff_limit=0, env_from_secrets=(), workdir=None),
}
PIPELINES = {
    "example": pipeline(),
    "one-step": Pipeline((Step("train", ("python", "-m", "train")),)),
    "diamond": Pipeline((
        Step("a", ("a",)), Step("b", ("b", "{{steps.a.outputs.x}}"), depends=("a",)),
        Step("c", ("c",), depends=("a",), when="a.ok == true"),
        Step("d", ("d", "{{steps.b.outputs.y}}"), depends=("b", "c"), when="b.y != 'no'"),
    )),
}


def container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("settings", SETTINGS, ids=list(SETTINGS))
@pytest.mark.parametrize("steps", PIPELINES, ids=list(PIPELINES))
def test_every_rendered_job_and_workflow_validates(settings, steps):
    spec = launch_spec(reason=NASTY, steps=PIPELINES[steps])
    validate_k8s(render_job(spec, SETTINGS[settings], OWNER))
    validate_argo(render_workflow(spec, SETTINGS[settings], OWNER))


def test_job_name_is_the_deterministic_dns_safe_run_name():
    long_model = "A-Very_Long.Model.Name-" * 4
    spec = launch_spec(model=long_model, key="source#id-1")
    job = render_job(spec, MINIMAL, OWNER)
    assert job["metadata"]["name"] == run_name(long_model, "source#id-1") == spec.run_name
    assert len(job["metadata"]["name"]) <= 63
    assert render_job(launch_spec(model=long_model, key="source#id-1"), MINIMAL, OWNER)["metadata"]["name"] \
        == job["metadata"]["name"]
    validate_k8s(job)  # label values for a 92-character model name are hashed down to 63


def test_job_carries_labels_limits_scheduling_and_lifetimes():
    spec = launch_spec()
    job = render_job(spec, pod_settings(), OWNER)
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "loopline" and labels[LABEL_MODEL] == "classifier"
    assert labels["loopline.io/owner"] == OWNER and labels["team"] == "ml"
    assert LABEL_REQUEST in labels and "loopline.io/correlation" in labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"]["loopline.io/idempotency-key"] == spec.env["LOOPLINE_IDEMPOTENCY_KEY"]
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (2, 3600, 86400)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "loopline-runs"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    c = container(job)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["requests"]["memory"] == "4Gi"
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]
    assert c["image"] == "ghcr.io/example/loopline:1.0" and c["workingDir"] == "/app"


def test_request_parameters_are_env_values_never_a_shell_string():
    spec = launch_spec(reason=NASTY)
    c = container(render_job(spec, MINIMAL, OWNER))
    assert c["command"] == ["python", "-m", "triggers.pod_entry", "job"] and "args" not in c
    assert not {"sh", "bash", "-c"} & set(c["command"])
    env = {e["name"]: e["value"] for e in c["env"]}
    assert len(env) == len(c["env"])  # one entry per name
    # Only the kubelet's own `$(VAR)` escape is applied: `$` doubled, nothing else touched.
    assert env["LOOPLINE_PARAM_REASON"] == NASTY.replace("$", "$$")
    assert json.loads(env["LOOPLINE_REQUEST"].replace("$$", "$"))["data"]["reason"] == NASTY
    assert json.loads(env["LOOPLINE_PIPELINE"]) == spec.pipeline.to_dict()


def test_the_launch_spec_round_trips_through_the_annotation():
    spec = launch_spec(reason=NASTY)
    job = render_job(spec, MINIMAL, OWNER)
    assert spec_from_annotations(job["metadata"]["annotations"]) == spec
    wf = render_workflow(spec, MINIMAL, OWNER)
    assert spec_from_annotations(wf["metadata"]["annotations"]) == spec


def test_a_job_cannot_honour_per_step_images():
    steps = Pipeline((Step("prep", ("p",), image="other:1"), Step("train", ("t",), depends=("prep",))))
    with pytest.raises(RenderError, match="per-step images"):
        render_job(launch_spec(steps=steps), MINIMAL, OWNER)
    same = Pipeline((Step("prep", ("p",), image=MINIMAL.image),))
    render_job(launch_spec(steps=same), MINIMAL, OWNER)  # the pod's own image is fine


def test_a_huge_request_is_refused_before_the_api_server_does():
    with pytest.raises(RenderError, match="annotation"):
        render_job(launch_spec(reason="x" * 300_000), MINIMAL, OWNER)


# --- Argo ------------------------------------------------------------------------------------


def tasks(wf):
    dag = next(t for t in wf["spec"]["templates"] if t["name"] == wf["spec"]["entrypoint"])
    return {t["name"]: t for t in dag["dag"]["tasks"]}


def templates(wf):
    return {t["name"]: t for t in wf["spec"]["templates"]}


def test_workflow_dag_mirrors_depends_when_and_outputs():
    wf = render_workflow(launch_spec(steps=PIPELINES["diamond"]), pod_settings(), OWNER)
    t = tasks(wf)
    assert "depends" not in t["a"]
    assert t["b"]["depends"] == "a.Succeeded"
    assert t["d"]["depends"] == "b.Succeeded && c.Succeeded"  # downstream of a skipped step is skipped
    assert t["c"]["when"] == "{{tasks.a.outputs.parameters.when-c}} == true"
    assert t["d"]["when"] == "{{tasks.b.outputs.parameters.when-d}} == true"
    # every task receives the outputs of all its upstream steps
    assert [p["value"] for p in t["d"]["arguments"]["parameters"]] == [
        "{{tasks.a.outputs.parameters.outputs}}", "{{tasks.b.outputs.parameters.outputs}}",
        "{{tasks.c.outputs.parameters.outputs}}"]
    tpl = templates(wf)
    assert [p["name"] for p in tpl["step-a"]["outputs"]["parameters"]] == ["outputs", "when-c"]
    assert [p["name"] for p in tpl["step-b"]["outputs"]["parameters"]] == ["outputs", "when-d"]
    assert tpl["step-d"]["container"]["args"] == [
        "step", "--step", "d", "--input", "a={{inputs.parameters.outputs-a}}",
        "--input", "b={{inputs.parameters.outputs-b}}", "--input", "c={{inputs.parameters.outputs-c}}"]
    assert tpl["step-b"]["retryStrategy"] == {"limit": 2, "retryPolicy": "OnFailure"}


def test_workflow_lifetimes_images_and_scheduling():
    steps = Pipeline((Step("prep", ("p",), image="python:3.11-slim", timeout_seconds=12.5),
                      Step("train", ("t",), depends=("prep",))))
    wf = render_workflow(launch_spec(steps=steps), pod_settings(), OWNER)
    spec = wf["spec"]
    assert len(wf["metadata"]["name"]) <= 63
    assert spec["activeDeadlineSeconds"] == 3600 and spec["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert spec["serviceAccountName"] == "loopline-runs" and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["podMetadata"]["labels"]["loopline.io/model"] == "classifier"
    tpl = templates(wf)
    assert tpl["step-prep"]["container"]["image"] == "python:3.11-slim"
    assert tpl["step-train"]["container"]["image"] == "ghcr.io/example/loopline:1.0"
    assert tpl["step-prep"]["activeDeadlineSeconds"] == 13
    assert tpl["step-train"]["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_nothing_argo_would_template_reaches_the_workflow_unencoded():
    spec = launch_spec(reason=NASTY)
    wf = render_workflow(spec, MINIMAL, OWNER)
    text = json.dumps(wf["spec"])
    ours = {"{{tasks.", "{{inputs.parameters."}
    for chunk in text.split("{{")[1:]:
        assert any(("{{" + chunk).startswith(prefix) for prefix in ours), chunk[:60]
    env = {e["name"]: e["value"] for e in templates(wf)["step-train"]["container"]["env"]}
    hidden = json.loads(base64.b64decode(env["LOOPLINE_ENV_B64"]))
    assert hidden["LOOPLINE_PARAM_REASON"] == NASTY
    assert json.loads(hidden["LOOPLINE_REQUEST"])["data"]["reason"] == NASTY
    assert env["LOOPLINE_MODEL"] == "classifier"  # safe values stay readable
    pipeline_json = json.loads(base64.b64decode(env["LOOPLINE_PIPELINE_B64"]))
    assert pipeline_json == spec.pipeline.to_dict()


def test_the_schemas_are_strict_enough_to_catch_a_typo():
    job = render_job(launch_spec(), MINIMAL, OWNER)
    job["spec"]["backofLimit"] = 1
    with pytest.raises(AssertionError, match="backofLimit"):
        validate_k8s(job)
    wf = render_workflow(launch_spec(), MINIMAL, OWNER)
    wf["spec"]["templates"][1]["container"]["comand"] = ["x"]
    with pytest.raises(AssertionError, match="invalid against the Argo schema"):
        validate_argo(wf)
