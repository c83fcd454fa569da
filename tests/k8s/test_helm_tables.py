"""The worker's table store in the chart (worker.tables): the setting, and a volume per pod.

`store: rocksdb` reaches the worker as LOOPLINE_TABLE_STORE; with `persistence.enabled` the worker
becomes a StatefulSet whose pods each mount their own claim where the worker keeps its tables:
`Settings.table_dir` for the state dir the chart sets, checked here, not copied.
"""

from __future__ import annotations

import helm_python as helm
import pytest

from loopline.settings import Settings
from tests.k8s.schemas_check import K8S_VERSIONS, validate_manifest
from tests.k8s.test_helm import CHART, FULL, by_kind, manifests, render

PERSISTENT = {"worker": {"replicas": 3, "tables": {"store": "rocksdb", "persistence": {
    "enabled": True, "storageClass": "fast-ssd", "size": "8Gi"}}}}


def worker(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                and d["metadata"]["name"].endswith("-worker")]
    return found


def env(doc: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_tables_are_in_memory_by_default_in_a_deployment_without_a_claim():
    docs = manifests({})
    doc = worker(docs)
    assert doc["kind"] == "Deployment"
    assert env(doc)["LOOPLINE_TABLE_STORE"] == "memory"
    assert not by_kind(docs, "StatefulSet") and not by_kind(docs, "PersistentVolumeClaim")
    assert "volumeClaimTemplates" not in doc["spec"]


def test_rocksdb_without_persistence_keeps_its_files_in_the_pod_s_emptydir(monkeypatch):
    docs = manifests({"worker": {"tables": {"store": "rocksdb"}}})
    doc = worker(docs)
    assert doc["kind"] == "Deployment"
    values = env(doc)
    assert values["LOOPLINE_TABLE_STORE"] == "rocksdb"
    state = next(v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "emptyDir": {}}
    monkeypatch.setenv("LOOPLINE_TABLE_STORE", values["LOOPLINE_TABLE_STORE"])
    assert Settings().table_store == "rocksdb"          # the value the worker's settings accept


def test_persistence_makes_the_worker_a_statefulset_with_a_claim_per_pod_where_the_tables_are(monkeypatch):
    docs = manifests(PERSISTENT)
    doc = worker(docs)
    assert doc["kind"] == "StatefulSet" and not [d for d in by_kind(docs, "Deployment")
                                                 if d["metadata"]["name"].endswith("-worker")]
    assert doc["spec"]["replicas"] == 3 and doc["spec"]["podManagementPolicy"] == "Parallel"
    (claim,) = doc["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "tables"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                             "resources": {"requests": {"storage": "8Gi"}}}
    pod = doc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tables")
    assert "tables" not in {v["name"] for v in pod["volumes"]}      # from the claim template
    # The mount is where the worker puts its tables for the state dir the chart gives it.
    values = env(doc)
    monkeypatch.setenv("LOOPLINE_STATE_DIR", values["LOOPLINE_STATE_DIR"])
    monkeypatch.setenv("LOOPLINE_TABLE_STORE", values["LOOPLINE_TABLE_STORE"])
    settings = Settings()
    assert settings.table_store == "rocksdb"
    assert mount["mountPath"] == str(settings.table_dir)
    state = next(m for m in container["volumeMounts"] if m["name"] == "state")
    assert mount["mountPath"].startswith(state["mountPath"] + "/")      # inside the state dir
    # The headless Service the StatefulSet names selects its pods and nothing else.
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == doc["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == doc["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    # Claims from the template, none made apart (no dead-letter claim asked for here).
    assert not by_kind(docs, "PersistentVolumeClaim")


@pytest.mark.parametrize("values", [PERSISTENT, {**FULL, "worker": {**FULL["worker"], **{
    "tables": {**FULL["worker"]["tables"], "persistence": {**FULL["worker"]["tables"]["persistence"],
                                                           "enabled": True}}}}}],
                         ids=["persistent", "full-persistent"])
def test_a_statefulset_worker_lints_and_validates_against_the_kubernetes_schemas(values):
    for kube_version in K8S_VERSIONS:
        result = helm.lint(str(CHART), values=values, strict=True, namespace="ml", kube_version=kube_version)
        assert result["errors"] == [], result
        assert [m for m in result["messages"] if m["severity"] >= 2] == [], result["messages"]
    docs = manifests(values)
    assert worker(docs)["kind"] == "StatefulSet"
    for doc in docs:
        validate_manifest(doc)


def test_the_notes_name_the_statefulset_and_the_claims():
    with helm.Chart.load(str(CHART)) as chart:
        notes = next(text for path, text in chart.render(PERSISTENT, name="loopline", namespace="ml").items()
                     if path.endswith("NOTES.txt"))
    assert "rollout status statefulset/loopline-worker" in notes
    assert "deploy/loopline-worker" not in notes
    assert "Tables: rocksdb, on a 8Gi claim per worker pod" in notes


def test_persistence_with_memory_tables_is_refused_at_render_naming_the_values():
    with pytest.raises(helm.HelmError, match="worker.tables.persistence.enabled needs worker.tables.store=rocksdb"):
        render({"worker": {"tables": {"persistence": {"enabled": True}}}})


@pytest.mark.parametrize("bad", [{"worker": {"tables": {"store": "redis"}}},
                                 {"worker": {"tables": {"persistence": {"size": "lots"}}}},
                                 {"worker": {"tables": {"persistence": {"accessModes": ["ReadWriteSometimes"]}}}},
                                 {"worker": {"tables": {"persist": True}}}])
def test_values_schema_rejects_bad_table_values(bad):
    with pytest.raises(helm.HelmError):
        render(bad)
