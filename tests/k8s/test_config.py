"""loopline.yaml's `pipeline.kubernetes` block, the LOOPLINE_KUBE_* settings and the worker's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopline import config as config_mod
from loopline.launchers import build_launchers, pod_settings
from loopline.settings import Settings
from tests.k8s.conftest import launch_spec
from tests.k8s.fake_kube import JOBS, WORKFLOWS
from tests.k8s.schemas_check import validate_argo, validate_k8s
from triggers.cluster import ArgoWorkflowLauncher, KubernetesJobLauncher
from triggers.lease import lease_name
from triggers.render_job import render_job
from triggers.render_workflow import render_workflow

STEPS = [{"name": "prepare", "command": ["python", "-m", "p"]},
         {"name": "evaluate", "command": ["python", "-m", "e"], "depends": ["prepare"]}]


def write(tmp_path: Path, pipeline: dict, name: str = "churn") -> Path:
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": name, "pipeline": {"steps": STEPS, **pipeline}}]}))
    return path


def test_full_kubernetes_block_becomes_pod_settings(tmp_path):
    path = write(tmp_path, {"launcher": "kubernetes", "kubernetes": {
        "namespace": "ml-runs", "image": "acme/loopline:2", "image_pull_policy": "Always",
        "image_pull_secrets": ["regcred"], "service_account": "trainer",
        "resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "8Gi"}, "gpu": 2},
        "node_selector": {"gpu": "l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "spot", "value": "true", "effect": "NoExecute", "toleration_seconds": 30}],
        "backoff_limit": 1, "active_deadline_seconds": 7200, "ttl_seconds_after_finished": 600,
        "env_from_secrets": ["mlflow"], "workdir": "/app", "labels": {"team": "ml"}, "annotations": {"a": "b"}}})
    model = config_mod.load(path)["churn"]
    pod = pod_settings(model, "default", "")
    assert pod.namespace == "ml-runs" and pod.image == "acme/loopline:2"
    assert pod.requests == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert pod.limits == {"memory": "8Gi", "nvidia.com/gpu": "2"}
    assert pod.tolerations[1] == {"operator": "Equal", "key": "spot", "value": "true", "effect": "NoExecute",
                                  "tolerationSeconds": 30}
    spec = launch_spec(model="churn", steps=model.pipeline)
    validate_k8s(render_job(spec, pod, "g"))
    validate_argo(render_workflow(spec, pod, "g"))


def test_defaults_come_from_the_settings(tmp_path):
    model = config_mod.load(write(tmp_path, {"launcher": "argo"}))["churn"]
    pod = pod_settings(model, "ml", "acme/loopline:3")
    assert (pod.namespace, pod.image, pod.backoff_limit, pod.ttl_seconds_after_finished) == ("ml", "acme/loopline:3",
                                                                                              0, 86400)
    with pytest.raises(config_mod.ConfigError, match="pipeline.kubernetes.image is required.*LOOPLINE_JOB_IMAGE"):
        pod_settings(model, "ml", "")


@pytest.mark.parametrize("block, message", [
    ({"namespace": "ML_Runs"}, r"pipeline\.kubernetes\.namespace: .*DNS-1123"),
    ({"resources": {"limits": {"memory": "8 GB"}}}, r"pipeline\.kubernetes\.resources\.limits: .*not a Kubernetes quantity"),
    ({"resources": {"requests": {"nvidia.com/gpu": 1}}}, r"must be set in limits"),
    ({"resources": {"gpu": 1, "limits": {"nvidia.com/gpu": 2}}}, r"disagrees"),
    ({"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]}, r"value must be empty"),
    ({"backoff_limit": -1}, r"backoff_limit: .*greater than or equal to 0"),
    ({"imagee": "x"}, r"pipeline\.kubernetes\.imagee: unknown key"),
    ({"annotations": {"loopline.io/reported": "x"}}, r"pipeline\.kubernetes\.annotations: .*never be"),
])
def test_bad_kubernetes_blocks_name_the_file_and_key(tmp_path, block, message):
    path = write(tmp_path, {"launcher": "kubernetes", "kubernetes": block})
    with pytest.raises(config_mod.ConfigError, match=message) as info:
        config_mod.load(path)
    assert str(info.value).startswith(str(path))


def test_per_step_images_need_argo(tmp_path):
    steps = [dict(STEPS[0], image="other:1"), STEPS[1]]
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "pipeline": {
        "launcher": "kubernetes", "kubernetes": {"image": "main:1"}, "steps": steps}}]}))
    with pytest.raises(config_mod.ConfigError, match=r"models\[0\]\.pipeline\.steps\[0\]\.image: .*launcher: argo"):
        config_mod.load(path)
    path.write_text(path.read_text().replace("launcher: kubernetes", "launcher: argo"))
    assert config_mod.load(path)["m"].pipeline.step("prepare").image == "other:1"


def test_the_worker_builds_the_launchers_its_models_need_from_a_kubeconfig(tmp_path, fake):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [
        {"name": "a", "pipeline": {"launcher": "kubernetes", "steps": STEPS}},
        {"name": "b", "pipeline": {"launcher": "argo", "steps": STEPS, "kubernetes": {"namespace": "argo-runs"}}},
        {"name": "c", "pipeline": {"launcher": "local", "steps": STEPS}}]}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "u"}}]}))
    settings = Settings(config=path, kube_in_cluster=False, kubeconfig=str(kubeconfig), kube_context="fake",
                        kube_namespace="ml", job_image="acme/loopline:4", group="prod", kube_lease_seconds=20)
    models = config_mod.load(path)
    launchers = build_launchers(settings, models)
    try:
        assert isinstance(launchers["kubernetes"], KubernetesJobLauncher)
        assert isinstance(launchers["argo"], ArgoWorkflowLauncher) and set(launchers) == {"kubernetes", "argo"}
        assert launchers["kubernetes"].submit(launch_spec(model="a", steps=models["a"].pipeline))
        assert launchers["argo"].submit(launch_spec(model="b", steps=models["b"].pipeline))
        (job,) = fake.list(JOBS, "ml")
        (wf,) = fake.list(WORKFLOWS, "argo-runs")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "acme/loopline:4"
        assert job["metadata"]["labels"]["loopline.io/owner"] == "prod"
        assert wf["metadata"]["labels"]["loopline.io/model"] == "b"
        lease = launchers["kubernetes"].lease  # one run watcher per worker: one Lease for both
        assert lease is launchers["argo"].lease
        assert (lease.namespace, lease.name, lease.duration) == ("ml", lease_name("prod"), 20)
    finally:
        for launcher in launchers.values():
            launcher.close()
    assert build_launchers(settings, {"c": models["c"]}) == {}  # no cluster model: no client at all


def test_settings_read_the_kube_environment(monkeypatch):
    monkeypatch.setenv("LOOPLINE_KUBE_IN_CLUSTER", "true")
    monkeypatch.setenv("LOOPLINE_KUBE_NAMESPACE", "ml")
    monkeypatch.setenv("LOOPLINE_JOB_IMAGE", "acme/loopline:5")
    monkeypatch.setenv("LOOPLINE_WEB_BIND", "0.0.0.0")
    monkeypatch.setenv("LOOPLINE_KUBE_LEASE_SECONDS", "30")
    settings = Settings()
    assert (settings.kube_in_cluster, settings.kube_namespace, settings.job_image, settings.web_bind,
            settings.kube_lease_seconds) == (True, "ml", "acme/loopline:5", "0.0.0.0", 30)


def test_a_cluster_model_without_an_image_stops_the_worker_with_file_and_key(tmp_path):
    path = write(tmp_path, {"launcher": "kubernetes"})
    settings = Settings(config=path, job_image="")
    with pytest.raises(config_mod.ConfigError, match=rf"^{path}: model churn: pipeline.kubernetes.image is required"):
        build_launchers(settings, config_mod.load(path))
