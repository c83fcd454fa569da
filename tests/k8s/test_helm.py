"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk; no helm binary)."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest
import yaml

from loopline import config as config_mod
from loopline.launchers import pod_settings
from tests.k8s.schemas_check import K8S_VERSIONS, validate_k8s

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "loopline"
FULL = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
VALUES = {"default": {}, "full": FULL}
ALLOWED = {("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
           ("argoproj.io", "workflows"): {"create", "get", "list", "watch", "delete"},
           ("", "pods"): {"get", "list"}, ("", "pods/log"): {"get", "list"}}


def render(values: dict, namespace: str = "ml") -> dict[str, list[dict]]:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="loopline", namespace=namespace)
    return {path: [d for d in yaml.safe_load_all(text) if d] for path, text in files.items()
            if not path.endswith("NOTES.txt")}


def manifests(values: dict) -> list[dict]:
    return [doc for docs in render(values).values() for doc in docs]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_chart_passes_helm_lint(values):
    for kube_version in K8S_VERSIONS:
        result = helm.lint(str(CHART), values=VALUES[values], strict=True, namespace="ml",
                           kube_version=kube_version)
        assert result["errors"] == [], result
        assert [m for m in result["messages"] if m["severity"] >= 2] == [], result["messages"]


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(values):
    docs = manifests(VALUES[values])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    for doc in docs:
        validate_k8s(doc)


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_the_role_grants_only_what_the_launchers_use(values):
    (role,) = by_kind(manifests(VALUES[values]), "Role")
    granted = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted[(group, resource)] = set(rule["verbs"])
    for key, verbs in granted.items():
        assert key in ALLOWED, f"unexpected grant {key}"
        assert verbs <= ALLOWED[key], f"{key}: {verbs - ALLOWED[key]} beyond what the launchers need"
    assert not any(resource == "secrets" for _, resource in granted)
    assert set(granted) == set(ALLOWED)
    (binding,) = by_kind(manifests(VALUES[values]), "RoleBinding")
    (account,) = by_kind(manifests(VALUES[values]), "ServiceAccount")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]


def test_argo_grant_can_be_left_out():
    (role,) = by_kind(manifests({"rbac": {"argoWorkflows": False}}), "Role")
    assert all(rule["apiGroups"] != ["argoproj.io"] for rule in role["rules"])


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_worker_probes_are_backed_by_the_faust_web_server(values):
    worker = next(d for d in by_kind(manifests(VALUES[values]), "Deployment") if d["metadata"]["name"].endswith("-worker"))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = next(p for p in container["ports"] if p["name"] == "web")["containerPort"]
    assert env["LOOPLINE_WEB_PORT"] == str(port) and env["LOOPLINE_WEB_BIND"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert container["command"] == ["loopline", "worker"]


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_the_configmap_is_a_valid_loopline_yaml_for_the_launchers(values, tmp_path):
    (cm,) = by_kind(manifests(VALUES[values]), "ConfigMap")
    path = tmp_path / "loopline.yaml"
    path.write_text(cm["data"]["loopline.yaml"])
    models = config_mod.load(path)
    worker = next(d for d in by_kind(manifests(VALUES[values]), "Deployment") if d["metadata"]["name"].endswith("-worker"))
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    for model in models.values():
        if model.launcher in ("kubernetes", "argo"):
            pod = pod_settings(model, env["LOOPLINE_KUBE_NAMESPACE"], env["LOOPLINE_JOB_IMAGE"])
            assert pod.image and pod.namespace


def test_credentials_are_secret_references_and_the_chart_creates_no_secret():
    docs = manifests(FULL)
    assert not by_kind(docs, "Secret")
    for deployment in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LOOPLINE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-user-loopline",
                                                                                   "key": "pass"}
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-basic-auth",
                                                                               "key": "pass"}
        assert env["LOOPLINE_BROKER"]["value"] == "prod-kafka-bootstrap.kafka:9093"  # Kafka is external
    default_env = [e["name"] for d in by_kind(manifests({}), "Deployment")
                   for e in d["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert not any("SASL" in name or name.startswith("MLFLOW_TRACKING_P") for name in default_env)


def test_operator_keys_come_from_an_existing_secret_mounted_where_the_worker_reads_them():
    def worker(values: dict) -> dict:
        return next(d for d in by_kind(manifests(values), "Deployment")
                    if d["metadata"]["name"].endswith("-worker"))["spec"]["template"]["spec"]

    spec = worker(FULL)
    container = spec["containers"][0]
    path = next(e["value"] for e in container["env"] if e["name"] == "LOOPLINE_OPERATOR_KEYS")
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    secret = next(v for v in spec["volumes"] if v["name"] == mount["name"])["secret"]
    assert secret["secretName"] == "loopline-operator-keys"
    assert secret["items"] == [{"key": "operators.yaml", "path": path[len(mount["mountPath"]) + 1:]}]
    default = worker({})
    assert "LOOPLINE_OPERATOR_KEYS" not in {e["name"] for e in default["containers"][0]["env"]}
    assert not [v for v in default["volumes"] if "secret" in v]


def test_serving_is_a_deployment_behind_a_service():
    docs = manifests(FULL)
    (service,) = by_kind(docs, "Service")
    serving = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    assert service["spec"]["selector"] == serving["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http" and service["spec"]["type"] == "LoadBalancer"
    assert serving["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9090
    assert len(by_kind(manifests({"serving": {"enabled": False}}), "Deployment")) == 1


@pytest.mark.parametrize("bad", [{"worker": {"replicas": "three"}}, {"kafka": {"bootstrapServers": ""}},
                                 {"mlflow": {"trackingUri": "sqlite:///x.db"}}, {"workers": {}},
                                 {"image": {"pullPolicy": "Sometimes"}}])
def test_values_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmError):
        render(bad)


def test_notes_render():
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render(FULL, name="loopline", namespace="ml")["loopline/templates/NOTES.txt"]
    assert "port-forward" in notes and "ml-runs" in notes and "kafka-user-loopline" in notes
