"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk; no helm binary).

The Role is checked against what the launchers really request of an API server
(tests/k8s/lifecycle.py), not against a list of verbs copied from the chart.
"""

from __future__ import annotations

import base64
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from loopline import config as config_mod
from loopline.launchers import pod_settings
from triggers import kube
from tests.k8s.fake_kube import LEASES
from tests.k8s.lifecycle import permissions_used
from tests.k8s.schemas_check import K8S_VERSIONS, validate_k8s, validate_manifest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "loopline"
FULL = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
VALUES = {"default": {}, "full": FULL}


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


KINDS = ["ConfigMap", "Deployment", "Deployment", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
         "Role", "RoleBinding", "Service", "Service", "ServiceAccount"]     # worker, serving, ui


@pytest.mark.parametrize("values, kinds", [
    ("default", sorted([*KINDS, "Secret"])),    # the serving key: made by the chart
    # the serving key: an existing Secret; alerts (a custom resource) and the dashboard's ConfigMap
    # and the dead-letter spill store's claim
    ("full", sorted([*KINDS, "ConfigMap", "PersistentVolumeClaim", "PrometheusRule"])),
], ids=list(VALUES))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(values, kinds):
    docs = manifests(VALUES[values])
    assert sorted(d["kind"] for d in docs) == kinds
    for doc in docs:
        validate_manifest(doc)          # a PrometheusRule against the operator's CRD, the rest Kubernetes'


@pytest.fixture(scope="module")
def used() -> dict[str, set[tuple[str, str, str]]]:
    """(group, resource, verb) each launcher requested in a whole life against a fake API server."""
    return {kind: permissions_used(kind) for kind in ("kubernetes", "argo")}


def grants(role: dict) -> set[tuple[str, str, str]]:
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_the_role_grants_every_request_the_launchers_make(values, used):
    (role,) = by_kind(manifests(VALUES[values]), "Role")
    granted = grants(role)
    for kind, requests in used.items():
        assert requests - granted == set(), f"the {kind} launcher makes requests the Role does not grant"
    # The converse: the Role grants nothing a launcher never asks for (least privilege).
    assert granted - set().union(*used.values()) == set()
    assert not any(resource == "secrets" for _, resource, _ in granted)
    (binding,) = by_kind(manifests(VALUES[values]), "RoleBinding")
    (account,) = by_kind(manifests(VALUES[values]), "ServiceAccount")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]


def test_the_fake_api_server_names_requests_as_rbac_does(fake, client):
    """The Role test trusts these names: Kubernetes' request verbs for each call the launchers can make."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {}}
    fake.add_pod("ml", {"metadata": {"name": "p"}}, log="hello")
    calls = [(lambda: client.create(kube.JOBS, "ml", job), ("batch", "jobs", "create")),
             (lambda: client.get(kube.JOBS, "ml", "j"), ("batch", "jobs", "get")),
             (lambda: client.list(kube.ARGO_WORKFLOWS, "ml", ""), ("argoproj.io", "workflows", "list")),
             (lambda: list(client.watch(kube.JOBS, "ml", "", "0", 1)), ("batch", "jobs", "watch")),
             (lambda: client.pods("ml", ""), ("", "pods", "list")),
             (lambda: client.log_tail("ml", "p", "main"), ("", "pods/log", "get")),
             (lambda: client.patch(kube.JOBS, "ml", "j", {"metadata": {"annotations": {"a": "b"}}}),
              ("batch", "jobs", "patch")),
             (lambda: client.create_lease("ml", lease), ("coordination.k8s.io", "leases", "create")),
             (lambda: client.get_lease("ml", "l"), ("coordination.k8s.io", "leases", "get")),
             (lambda: client.replace_lease("ml", fake.get(LEASES, "ml", "l")),
              ("coordination.k8s.io", "leases", "update"))]
    for call, name in calls:
        before = len(fake.requests)
        call()
        assert {(r.group, r.resource, r.verb) for r in fake.requests[before:]} == {name}


def test_argo_grant_can_be_left_out_and_jobs_still_work(used):
    (role,) = by_kind(manifests({"rbac": {"argoWorkflows": False}}), "Role")
    granted = grants(role)
    assert {group for group, _, _ in granted} == {"batch", "", "coordination.k8s.io"}
    assert used["kubernetes"] <= granted


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
    (cm,) = [d for d in by_kind(manifests(VALUES[values]), "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    path = tmp_path / "loopline.yaml"
    path.write_text(cm["data"]["loopline.yaml"])
    models = config_mod.load(path)
    worker = next(d for d in by_kind(manifests(VALUES[values]), "Deployment") if d["metadata"]["name"].endswith("-worker"))
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    for model in models.values():
        if model.launcher in ("kubernetes", "argo"):
            pod = pod_settings(model, env["LOOPLINE_KUBE_NAMESPACE"], env["LOOPLINE_JOB_IMAGE"])
            assert pod.image and pod.namespace


def test_credentials_are_secret_references_and_given_existing_secrets_the_chart_creates_none():
    docs = manifests(FULL)
    assert not by_kind(docs, "Secret")
    for deployment in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        # Kafka's password is a file of a mounted Secret (test_kafka_security_...)
        assert "LOOPLINE_KAFKA_SASL_PASSWORD" not in env and "LOOPLINE_KAFKA_SASL_PASSWORD_FILE" in env
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-basic-auth",
                                                                               "key": "pass"}
        assert env["LOOPLINE_BROKER"]["value"] == "prod-kafka-bootstrap.kafka:9093"  # Kafka is external
    default_env = [e["name"] for d in by_kind(manifests({}), "Deployment")
                   for e in d["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert not any("SASL" in name or name.startswith("MLFLOW_TRACKING_P") for name in default_env)


KAFKA_SECURITY = {  # MSK-like: SASL_SSL with SCRAM, a private CA, mutual TLS on top
    "securityProtocol": "SASL_SSL",
    "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user", "passwordKey": "pw"},
    "tls": {"caSecret": "kafka-ca", "clientCertSecret": "kafka-client"}}


@pytest.mark.parametrize("security, files", [
    (KAFKA_SECURITY, {"LOOPLINE_KAFKA_SASL_USERNAME_FILE": ("kafka-user", "username"),
                      "LOOPLINE_KAFKA_SASL_PASSWORD_FILE": ("kafka-user", "pw"),
                      "LOOPLINE_KAFKA_SSL_CA_FILE": ("kafka-ca", "ca.crt"),
                      "LOOPLINE_KAFKA_SSL_CERT_FILE": ("kafka-client", "tls.crt"),
                      "LOOPLINE_KAFKA_SSL_KEY_FILE": ("kafka-client", "tls.key")}),
    ({"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER", "existingSecret": "tokens"}},
     {"LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_FILE": ("tokens", "token")}),
    ({"securityProtocol": "SSL"}, {}),               # public CAs (MSK's TLS listener): nothing mounted
], ids=["sasl-scram-mtls", "oauthbearer", "tls-system-cas"])
def test_kafka_security_reaches_both_deployments_as_settings_and_mounted_secret_files(security, files):
    """Each *_FILE setting names a file of the projected volume, which takes it from the right
    key of the right Secret; the protocol and mechanism are plain settings."""
    values = {"kafka": {"bootstrapServers": "b-1.kafka:9096", **security}}
    settings = {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": security["securityProtocol"]}
    if "sasl" in security:
        settings["LOOPLINE_KAFKA_SASL_MECHANISM"] = security["sasl"]["mechanism"]
    for deployment in by_kind(manifests(values), "Deployment"):
        validate_k8s(deployment)
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("LOOPLINE_KAFKA_")}
        assert {k: v for k, v in env.items() if not k.endswith("_FILE")} == settings
        assert set(env) - set(settings) == set(files)
        mounted = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for setting, (secret, key) in files.items():
            mount = next(m for m in mounted.values() if env[setting].startswith(m["mountPath"] + "/"))
            assert mount["readOnly"] is True
            sources = volumes[mount["name"]]["projected"]["sources"]
            items = [item for s in sources if s["secret"]["name"] == secret for item in s["secret"]["items"]]
            assert {"key": key, "path": env[setting][len(mount["mountPath"]) + 1:]} in items, setting
        if not files:
            kafka = [v for v in spec["volumes"] if "projected" in v or ("secret" in v and v["name"] != "serving-key")]
            assert not kafka


@pytest.mark.parametrize("kafka, error", [
    ({"securityProtocol": "SASL_SSL"}, "kafka.sasl.mechanism is required"),
    ({"securityProtocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN"}}, "kafka.sasl.existingSecret"),
    ({"sasl": {"mechanism": "PLAIN", "existingSecret": "s"}}, "uses no SASL"),
    ({"securityProtocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN", "existingSecret": "s"},
      "tls": {"caSecret": "ca"}}, "uses no TLS"),
    ({"securityProtocol": "TLS"}, "securityProtocol"),
    ({"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI", "existingSecret": "s"}}, "mechanism"),
])
def test_a_kafka_security_that_cannot_work_is_refused_at_render_naming_the_value(kafka, error):
    with pytest.raises(helm.HelmError, match=error):
        render({"kafka": {"bootstrapServers": "kafka:9092", **kafka}})


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


def worker_spec(values: dict) -> dict:
    return next(d for d in by_kind(manifests(values), "Deployment")
                if d["metadata"]["name"].endswith("-worker"))["spec"]["template"]["spec"]


def spill_uri(spec: dict) -> str | None:
    return next((e["value"] for e in spec["containers"][0]["env"]
                 if e["name"] == "LOOPLINE_DEADLETTER_SPILL_URI"), None)


def test_dead_letter_bytes_go_to_the_spill_uri_value_on_the_worker_only(monkeypatch):
    """deadletter.spillUri reaches the worker as the setting the spill store is built from
    (loopline/worker.py -> streams.spill.SpillStore); no volume is needed for an object store."""
    from loopline.settings import Settings

    values = {"deadletter": {"spillUri": "s3://ml-bucket/loopline/deadletter"}}
    docs = manifests(values)
    spec = worker_spec(values)
    assert spill_uri(spec) == "s3://ml-bucket/loopline/deadletter"
    assert "deadletter" not in {v["name"] for v in spec["volumes"]}
    assert not by_kind(docs, "PersistentVolumeClaim")
    for deployment in by_kind(docs, "Deployment"):     # serving and the page dead-letter nothing
        if not deployment["metadata"]["name"].endswith("-worker"):
            assert spill_uri(deployment["spec"]["template"]["spec"]) is None
    monkeypatch.setenv("LOOPLINE_DEADLETTER_SPILL_URI", spill_uri(spec))
    assert Settings().deadletter_spill_uri == "s3://ml-bucket/loopline/deadletter"


def test_by_default_the_spilled_bytes_live_in_the_worker_s_emptydir_and_the_notes_say_so():
    """What the values are for: without them the spill store is <state dir>/deadletter, an emptyDir."""
    spec = worker_spec({})
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert spill_uri(spec) is None and env["LOOPLINE_STATE_DIR"] == "/var/lib/loopline"
    assert next(v for v in spec["volumes"] if v["name"] == "state") == {"name": "state", "emptyDir": {}}
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render({}, name="loopline", namespace="ml")["loopline/templates/NOTES.txt"]
    assert "lost when\nthe pod is replaced: set deadletter.spillUri or deadletter.persistence.enabled" in notes


@pytest.mark.parametrize("claim", ["", "shared-deadletter"], ids=["chart-made", "existing-claim"])
def test_a_dead_letter_volume_is_mounted_where_the_spill_uri_points(claim):
    """deadletter.persistence: one claim (ReadWriteMany by default: every worker replica mounts
    it), mounted by the worker at the path its spill URI names; the rest of the state dir stays
    an emptyDir per pod. The chart makes the claim (kept on uninstall) unless one is given."""
    from streams.spill import SpillStore

    persistence = {"enabled": True, "existingClaim": claim, "storageClass": "efs-sc", "size": "20Gi"}
    values = {"worker": {"replicas": 3}, "deadletter": {"persistence": persistence}}
    docs = manifests(values)
    spec = worker_spec(values)
    uri = spill_uri(spec)
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "deadletter")
    assert uri == "file://" + mount["mountPath"] and not mount.get("readOnly")
    assert not any(m["mountPath"] == mount["mountPath"] or mount["mountPath"].startswith(m["mountPath"] + "/")
                   for m in container["volumeMounts"] if m is not mount)
    volume = next(v for v in spec["volumes"] if v["name"] == "deadletter")
    claims = by_kind(docs, "PersistentVolumeClaim")
    if claim:
        assert volume == {"name": "deadletter", "persistentVolumeClaim": {"claimName": claim}}
        assert not claims
    else:
        (pvc,) = claims
        validate_k8s(pvc)
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"] == "loopline-deadletter"
        assert pvc["metadata"]["namespace"] == "ml"
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "efs-sc",
                               "resources": {"requests": {"storage": "20Gi"}}}
    assert next(v for v in spec["volumes"] if v["name"] == "state") == {"name": "state", "emptyDir": {}}
    # The URI is one the spill store takes as a local folder: the mount path itself.
    assert SpillStore(uri).root == mount["mountPath"]


def test_a_spill_uri_and_a_dead_letter_volume_together_are_refused_at_render():
    with pytest.raises(helm.HelmError, match="deadletter.spillUri and deadletter.persistence.enabled"):
        render({"deadletter": {"spillUri": "s3://b/dl", "persistence": {"enabled": True}}})


def component(docs: list[dict], kind: str, name: str) -> list[dict]:
    return [d for d in by_kind(docs, kind) if d["metadata"]["labels"]["app.kubernetes.io/component"] == name]


def test_serving_is_a_deployment_behind_a_service():
    docs = manifests(FULL)
    (service,) = component(docs, "Service", "serving")
    serving = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    assert service["spec"]["selector"] == serving["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http" and service["spec"]["type"] == "LoadBalancer"
    assert serving["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9090
    disabled = manifests({"serving": {"enabled": False}})
    assert not component(disabled, "Deployment", "serving") and not component(disabled, "Service", "serving")
    assert not [d for d in disabled if d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret")]


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_the_page_is_its_own_deployment_behind_a_cluster_internal_service(values):
    docs = manifests(VALUES[values])
    (deployment,) = component(docs, "Deployment", "ui")
    (service,) = component(docs, "Service", "ui")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert container["command"] == ["loopline", "ui", "--host", "0.0.0.0", "--port", str(port)]
    assert deployment["spec"]["replicas"] == 1
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["targetPort"] == "http"
    others = [d for d in by_kind(docs, "Deployment") if d is not deployment]
    for other in others:                # the Service selects the page's pods and nobody else's
        assert not service["spec"]["selector"].items() <= other["spec"]["template"]["metadata"]["labels"].items()
    # Read-only: it reads Kafka and MLflow like the others, and gets neither API access nor a key.
    env = {e["name"] for e in container["env"]}
    assert {"LOOPLINE_BROKER", "LOOPLINE_MLFLOW_URI", "LOOPLINE_CONFIG"} <= env
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if v["name"] in ("serving-key", "operator-keys")]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [d for d in docs if d["kind"] == "Ingress"]


def test_the_page_can_be_left_out():
    docs = manifests({"ui": {"enabled": False}})
    assert not component(docs, "Deployment", "ui") and not component(docs, "Service", "ui")


def serving_objects(values: dict) -> dict[str, dict]:
    """The serving Deployment, its pod spec and container, and the autoscaler, budget and key Secret
    (None where not rendered); every one checked against the Kubernetes schemas."""
    docs = manifests(values)
    for doc in docs:
        validate_manifest(doc)
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-serving"))
    pod = deployment["spec"]["template"]["spec"]
    return {"deployment": deployment, "pod": pod, "container": pod["containers"][0],
            "labels": deployment["spec"]["template"]["metadata"]["labels"],
            "worker": next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-worker")),
            **{kind: next(iter(by_kind(docs, kind)), None)
               for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret")}}


def test_serving_runs_two_replicas_by_default_scaled_by_an_autoscaler_that_targets_it():
    served = serving_objects({})
    hpa, deployment = served["HorizontalPodAutoscaler"], served["deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    # Utilisation is a share of the request: without one the autoscaler cannot act.
    assert served["container"]["resources"]["requests"]["cpu"]
    # The autoscaler owns the count; a count in the Deployment would be reset by each upgrade.
    assert "replicas" not in deployment["spec"]
    fixed = serving_objects({"serving": {"autoscaling": {"enabled": False}}})
    assert fixed["deployment"]["spec"]["replicas"] == 2 and fixed["HorizontalPodAutoscaler"] is None
    full = serving_objects(FULL)["HorizontalPodAutoscaler"]["spec"]
    assert (full["minReplicas"], full["maxReplicas"]) == (3, 12)
    assert full["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_the_disruption_budget_selects_the_serving_pods_and_only_them(values):
    served = serving_objects(VALUES[values])
    pdb = served["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= served["labels"].items()
    worker_labels = served["worker"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= worker_labels.items()
    assert selector == served["deployment"]["spec"]["selector"]["matchLabels"]
    # One replica: a budget of one available would block every node drain.
    single = serving_objects({"serving": {"replicas": 1, "autoscaling": {"enabled": False}}})
    assert single["PodDisruptionBudget"] is None


def key_file(served: dict) -> tuple[str, dict]:
    """The path LOOPLINE_SERVING_KEY_FILE names, and the secret volume that file comes from."""
    container, pod = served["container"], served["pod"]
    path = next(e["value"] for e in container["env"] if e["name"] == "LOOPLINE_SERVING_KEY_FILE")
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert [item["path"] for item in secret["items"]] == [path[len(mount["mountPath"]) + 1:]]
    # runAsNonRoot with fsGroup: the group-readable file is readable, by nobody else
    assert secret["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"]
    return path, secret


def test_every_replica_reads_the_serving_key_from_one_secret_the_chart_makes():
    served = serving_objects({})
    path, volume = key_file(served)
    made = served["Secret"]
    assert volume["secretName"] == made["metadata"]["name"]
    assert volume["items"] == [{"key": "serving.key", "path": "serving.key"}]
    key = base64.b64decode(made["data"]["serving.key"])
    assert len(key) >= 32                       # an HMAC-SHA256 key of at least its output size
    # The worker neither signs nor verifies ids: it does not get the key.
    worker = served["worker"]["spec"]["template"]["spec"]
    assert not [v for v in worker["volumes"] if v.get("secret", {}).get("secretName") == volume["secretName"]]


def test_an_existing_secret_is_mounted_instead_and_the_chart_makes_none():
    served = serving_objects(FULL)
    path, volume = key_file(served)
    assert served["Secret"] is None
    assert volume["secretName"] == "loopline-serving-key"
    assert volume["items"] == [{"key": "hmac.key", "path": path.rsplit("/", 1)[1]}]


@pytest.mark.parametrize("values, rows, wait", [("default", "64", "2"), ("full", "128", "1.5")],
                         ids=["default", "full"])
def test_serving_probes_and_micro_batching_settings(values, rows, wait):
    served = serving_objects(VALUES[values])
    container = served["container"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["LOOPLINE_SERVING_MAX_BATCH_ROWS"], env["LOOPLINE_SERVING_MAX_BATCH_WAIT_MS"]) == (rows, wait)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert container["command"][-2:] == ["--port", str(port)]
    annotations = served["deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("serving, error", [
    ({"replicas": 4, "autoscaling": {"maxReplicas": 3}}, "serving.autoscaling.maxReplicas"),
    ({"replicas": 0}, "serving.replicas must be at least 1"),
    ({"resources": {"requests": {"cpu": None}}}, "serving.resources.requests.cpu"),   # null: unset
], ids=["max-below-min", "zero-with-autoscaling", "no-cpu-request"])
def test_an_autoscaler_that_cannot_work_is_refused_at_render_naming_the_value(serving, error):
    with pytest.raises(helm.HelmError, match=error):
        render({"serving": serving})


@pytest.mark.parametrize("bad", [{"worker": {"replicas": "three"}}, {"kafka": {"bootstrapServers": ""}},
                                 {"mlflow": {"trackingUri": "sqlite:///x.db"}}, {"workers": {}},
                                 {"image": {"pullPolicy": "Sometimes"}},
                                 {"serving": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
                                 {"serving": {"batching": {"maxRows": -1}}},
                                 {"serving": {"batching": {"maxWaitMs": 5000}}},
                                 {"serving": {"batching": {"maxWaitMs": "2ms"}}},
                                 {"serving": {"key": {"existingSecret": "Serving_Key"}}},
                                 {"serving": {"autoscaling": {"minReplicas": 2}}},
                                 {"deadletter": {"spillUri": "relative/deadletter"}},
                                 {"deadletter": {"persistence": {"accessModes": ["ReadWriteSometimes"]}}},
                                 {"deadletter": {"persistence": {"size": "lots"}}},
                                 {"deadletter": {"persistence": {"enabled": True, "claim": "x"}}}])
def test_values_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmError, match="values don't meet the specifications of the schema"):
        render(bad)


def test_notes_render():
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render(FULL, name="loopline", namespace="ml")["loopline/templates/NOTES.txt"]
    assert "port-forward" in notes and "ml-runs" in notes and "kafka-user-loopline" in notes
    assert "port-forward svc/loopline-prod-ui 8090:8090" in notes and "PrometheusRule loopline-prod" in notes
