"""Distributed runs on a cluster: an Indexed Job + headless Service, or a Kubeflow PyTorchJob.

Rendering is checked against the real schemas (Kubernetes' through kubernetes-validate; the
PyTorchJob CRD's openAPIV3Schema vendored from kubeflow/training-operator v1.9.0, strict);
launching and watching against the fake API server over HTTP with the real client; the Helm
chart's Role against what these launchers really requested.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from agents.trainer import Trainer
from loopline import config as config_mod
from streams import events as ev
from tests.k8s.conftest import NAMESPACE, OWNER, FakeClock, launch_spec, pod_settings, wait_for
from tests.k8s.controllers import complete, failed
from tests.k8s.fake_kube import JOBS, FakeKube
from tests.k8s.lifecycle import TrainerContext
from tests.k8s.schemas_check import SCHEMAS, _strict, validate_k8s
from triggers.cluster import KubernetesJobLauncher
from triggers.kube import KubeClient
from triggers.lease import Lease, lease_name
from triggers.pipeline import FAILED, PENDING, RUNNING, SUCCEEDED
from triggers.podspec import ANN_REPORTED, RenderError
from triggers.render_distributed import (
    COMPLETION_INDEX,
    Distributed,
    render_distributed,
    render_indexed_job,
    render_pytorchjob,
    render_service,
)

SERVICES = "v1/services"
PYTORCHJOBS = "kubeflow.org/v1/pytorchjobs"
INDEXED = Distributed(workers=3, gpus_per_worker=2, port=29511)
TORCH = Distributed(workers=4, gpus_per_worker=1, mode="pytorchjob")


# --- schemas -----------------------------------------------------------------------------


@functools.cache
def _pytorchjob_validator():
    schema = _strict(json.loads((SCHEMAS / "pytorchjob-kubeflow-v1.json").read_text()))
    return jsonschema.validators.validator_for(schema)(schema)


def validate_pytorchjob(manifest: dict) -> None:
    """Against the CRD (strict: the API server would prune a misspelt field silently), and each
    replica's pod template against Kubernetes' own PodTemplate schema."""
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    errors = sorted(_pytorchjob_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "PyTorchJob is invalid against the Training Operator's CRD:\n" + "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors)
    for kind, replica in manifest["spec"]["pytorchReplicaSpecs"].items():
        validate_k8s({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": kind.lower()},
                      "template": replica["template"]})


def test_the_vendored_crd_schema_catches_a_misspelt_field():
    body = render_pytorchjob(launch_spec(), pod_settings(), OWNER, TORCH)
    body["spec"]["pytorchReplicaSpecs"]["Worker"]["replica"] = 3
    with pytest.raises(AssertionError, match="Additional properties"):
        validate_pytorchjob(body)
    body = render_pytorchjob(launch_spec(), pod_settings(), OWNER, TORCH)
    body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "3"
    with pytest.raises(AssertionError, match="is not of type 'integer'"):
        validate_pytorchjob(body)


# --- rendering ---------------------------------------------------------------------------


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_indexed_job_and_headless_service_carry_the_torchrun_contract():
    spec = launch_spec()
    job, service = render_distributed(spec, pod_settings(), OWNER, INDEXED)
    validate_k8s(job)
    validate_k8s(service)
    name = spec.run_name
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    # A rank that fails cannot rejoin the rendezvous: the first failed index fails the Job.
    assert (job["spec"]["backoffLimitPerIndex"], job["spec"]["maxFailedIndexes"]) == (0, 0)
    assert "backoffLimit" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == name
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["MASTER_ADDR"] == f"{name}-0.{name}"          # pod hostname <job>-<index> . the Service
    assert (env["MASTER_PORT"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["NPROC_PER_NODE"]) == ("29511", "3",
                                                                                                  "0", "1")
    assert env["RANK"] == {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
    assert [e["name"] for e in container["env"]].count("RANK") == 1
    assert env["LOOPLINE_RUN_NAME"] == name                  # still the pipeline's pod entry
    assert container["command"] == ["python", "-m", "triggers.pod_entry", "job"]
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29511, "protocol": "TCP"}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["limits"]["memory"] == "8Gi"  # the rest of the pod settings stay
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    assert service["spec"]["ports"][0]["port"] == 29511
    assert service["metadata"]["labels"] == job["metadata"]["labels"]  # found by the owner selector too


def test_the_service_is_owned_by_the_created_job():
    spec = launch_spec()
    created = {**render_indexed_job(spec, pod_settings(), OWNER, INDEXED)}
    with pytest.raises(RenderError, match="no uid"):
        render_service(spec, pod_settings(), OWNER, INDEXED, created)
    created["metadata"] = {**created["metadata"], "uid": "4f1c"}
    service = render_service(spec, pod_settings(), OWNER, INDEXED, created)
    assert service["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": spec.run_name, "uid": "4f1c"}]
    validate_k8s(service)


def test_pod_hostnames_must_fit_a_dns_label():
    spec = launch_spec(model="m" * 46)                          # a 63-character run name
    with pytest.raises(RenderError, match="exceed 63 characters"):
        render_indexed_job(spec, pod_settings(), OWNER, INDEXED)


def test_pytorchjob_has_one_master_and_n_minus_one_workers_with_the_same_container():
    spec = launch_spec()
    (body,) = render_distributed(spec, pod_settings(), OWNER, TORCH)
    validate_pytorchjob(body)
    replicas = body["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 3}
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert all(r["restartPolicy"] == "Never" for r in replicas.values())
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch"                     # the operator configures only this one
    assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 29500, "protocol": "TCP"}]
    env = env_of(container)
    # The operator sets MASTER_ADDR / MASTER_PORT / WORLD_SIZE / RANK itself: not duplicated here.
    assert not {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"} & set(env)
    assert (env["LOCAL_RANK"], env["NPROC_PER_NODE"], body["spec"]["nprocPerNode"]) == ("0", "1", "1")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert body["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 0, "activeDeadlineSeconds": 3600,
                                         "ttlSecondsAfterFinished": 86400}
    assert body["metadata"]["name"] == spec.run_name and ANN_REPORTED not in body["metadata"]["annotations"]


# --- configuration -------------------------------------------------------------------------

STEPS = [{"name": "train", "command": ["python", "-m", "t"]}]


def load(tmp_path: Path, kubernetes: dict, launcher: str = "kubernetes"):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "churn", "gate": {"from_step": "train"}, "pipeline": {
        "launcher": launcher, "steps": STEPS, "kubernetes": kubernetes}}]}))
    return config_mod.load(path)["churn"]


def test_the_distributed_block_is_validated_with_errors_naming_the_key(tmp_path):
    model = load(tmp_path, {"distributed": {"workers": 4, "gpus_per_worker": 1, "mode": "pytorchjob"}})
    assert model.config.pipeline.kubernetes.distributed.settings() == Distributed(4, 1, 29500, "pytorchjob")
    assert load(tmp_path, {"distributed": {"workers": 2}}).config.pipeline.kubernetes.distributed.settings() \
        == Distributed(2, 0, 29500, "indexed")
    for block, key in [({"workers": 1}, "pipeline.kubernetes.distributed.workers"),
                       ({}, "pipeline.kubernetes.distributed.workers"),
                       ({"workers": 2, "gpus_per_worker": -1}, "pipeline.kubernetes.distributed.gpus_per_worker"),
                       ({"workers": 2, "port": 80}, "pipeline.kubernetes.distributed.port"),
                       ({"workers": 2, "mode": "mpi"}, "pipeline.kubernetes.distributed.mode"),
                       ({"workers": 2, "nodes": 2}, "pipeline.kubernetes.distributed.nodes")]:
        with pytest.raises(config_mod.ConfigError, match=key.replace(".", r"\.")):
            load(tmp_path, {"distributed": block})
    with pytest.raises(config_mod.ConfigError, match="gpus_per_worker: 2 disagrees with resources nvidia.com/gpu"):
        load(tmp_path, {"resources": {"gpu": 1}, "distributed": {"workers": 2, "gpus_per_worker": 2}})
    with pytest.raises(config_mod.ConfigError, match="kubernetes.distributed: the argo launcher runs no"):
        load(tmp_path, {"distributed": {"workers": 2}}, launcher="argo")


# --- launching and watching against the fake API server ----------------------------------------


@pytest.fixture
def launcher(client):
    made = []

    def make(lease=None):
        made.append(KubernetesJobLauncher(
            client, {"classifier": pod_settings(), "torch": pod_settings(), "plain": pod_settings()}, OWNER,
            watch_timeout=5, lease=lease, distributed={"classifier": INDEXED, "torch": TORCH}))
        return made[-1]

    yield make
    for item in made:
        item.close()


def stored(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "namespace"):
        obj["metadata"].pop(key, None)
    return obj


def rank_pod(fake, run: str, rank: int, report: dict, log: str = "", torch: bool = False) -> None:
    """What the Job controller (or the Training Operator) and the kubelet leave behind for one rank."""
    if torch:
        labels = {"training.kubeflow.org/job-name": run, "training.kubeflow.org/replica-type":
                  "master" if rank == 0 else "worker", "training.kubeflow.org/replica-index": str(max(rank - 1, 0))}
        name, annotations, container = f"{run}-{'master-0' if rank == 0 else f'worker-{rank - 1}'}", {}, "pytorch"
    else:
        labels = {"job-name": run, "batch.kubernetes.io/job-name": run, COMPLETION_INDEX: str(rank)}
        name, annotations, container = f"{run}-{rank}-x7k2p", {COMPLETION_INDEX: str(rank)}, "pipeline"
    fake.add_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": name, "labels": labels, "annotations": annotations},
                             "status": {"containerStatuses": [{"name": container, "state": {"terminated": {
                                 "exitCode": 0 if report["phase"] == SUCCEEDED else 1,
                                 "message": json.dumps(report)}}}]}}, log=log)


def test_indexed_run_creates_job_and_owned_service_idempotently(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    assert runs.submit(spec) is True
    job = fake.get(JOBS, NAMESPACE, spec.run_name)
    service = fake.get(SERVICES, NAMESPACE, spec.run_name)
    validate_k8s(stored(job))
    validate_k8s(stored(service))
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert runs.submit(spec) is False                          # redelivered: 409 on both, nothing new
    assert (fake.count("POST", "/jobs"), fake.count("POST", "/services")) == (2, 2)
    # A submit that died between the two creates: the redelivery still makes the Service, owned by the Job.
    fake.delete(SERVICES, NAMESPACE, spec.run_name)
    assert launcher().submit(spec) is False
    assert fake.get(SERVICES, NAMESPACE, spec.run_name)["metadata"]["ownerReferences"][0]["uid"] == \
        job["metadata"]["uid"]
    assert len(fake.list(JOBS, NAMESPACE)) == 1
    # A model that is not distributed still gets a plain Job and no Service.
    plain = launch_spec(model="plain")
    assert runs.submit(plain) is True
    assert "completionMode" not in fake.get(JOBS, NAMESPACE, plain.run_name)["spec"]
    assert fake.get(SERVICES, NAMESPACE, plain.run_name) is None


def test_indexed_run_succeeds_when_every_index_has_succeeded(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    fake.set_status(JOBS, NAMESPACE, spec.run_name, {"active": 3, "ready": 3, "startTime": "2026-01-01T10:00:00Z"})
    wait_for(lambda: (s := runs.status(spec.run_name)) and s.phase == RUNNING)
    for rank in range(3):
        rank_pod(fake, spec.run_name, rank, {"phase": SUCCEEDED, "outputs": {"evaluate": {"rank": rank}}})
    # 2 of 3 succeeded: still running, whatever the pods say
    fake.set_status(JOBS, NAMESPACE, spec.run_name, {"active": 1, "succeeded": 2, "startTime": "2026-01-01T10:00:00Z"})
    version = fake.get(JOBS, NAMESPACE, spec.run_name)["metadata"]["resourceVersion"]
    wait_for(lambda: runs._watchers[NAMESPACE].resource_version == version)
    assert runs.status(spec.run_name).phase == RUNNING
    # succeeded == completions (before the Complete condition is written)
    fake.set_status(JOBS, NAMESPACE, spec.run_name, {"succeeded": 3, "startTime": "2026-01-01T10:00:00Z"})
    status = wait_for(lambda: (s := runs.status(spec.run_name)) and s.terminal and s)
    assert status.phase == SUCCEEDED
    assert status.outputs == {"evaluate": {"rank": 0}}             # rank 0's report


def test_indexed_run_failure_names_the_failed_rank_with_its_log(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    # Rank 2 failed; the Job controller then stopped the others (their runner reports "cancelled").
    rank_pod(fake, spec.run_name, 0, {"phase": FAILED, "reason": "cancelled"}, log="rank 0 stopped")
    rank_pod(fake, spec.run_name, 1, {"phase": SUCCEEDED})
    rank_pod(fake, spec.run_name, 2, {"phase": FAILED, "reason": "step train exited with code 3",
                                      "steps": {"train": FAILED}}, log="CUDA error: out of memory")
    fake.set_status(JOBS, NAMESPACE, spec.run_name, failed("FailedIndexes", "Job has failed indexes"))
    status = wait_for(lambda: (s := runs.status(spec.run_name)) and s.terminal and s)
    assert status.phase == FAILED
    assert status.reason == "rank 2: FailedIndexes: Job has failed indexes: step train exited with code 3"
    assert status.log_tail == ("CUDA error: out of memory",)
    assert status.steps["train"] == FAILED


def test_indexed_run_failure_without_reports_points_at_rank_0(fake, launcher):
    spec = launch_spec()
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    rank_pod(fake, spec.run_name, 0, {"phase": SUCCEEDED}, log="last words")
    fake.set_status(JOBS, NAMESPACE, spec.run_name, failed("DeadlineExceeded", "Job was active longer"))
    status = wait_for(lambda: (s := runs.status(spec.run_name)) and s.terminal and s)
    assert status.reason == "rank 0: DeadlineExceeded: Job was active longer"
    assert status.log_tail == ("last words",)


def test_pytorchjob_is_created_once_and_followed_through_its_conditions(fake, launcher):
    spec = launch_spec(model="torch")
    runs = launcher()
    assert runs.submit(spec) is True and runs.submit(spec) is False
    (obj,) = fake.list(PYTORCHJOBS, NAMESPACE)
    validate_pytorchjob(stored(obj))
    assert fake.list(JOBS, NAMESPACE) == [] and fake.list(SERVICES, NAMESPACE) == []  # the operator's job
    assert runs.wait_synced()
    status = wait_for(lambda: runs.status(spec.run_name))
    assert status.phase == PENDING and status.steps == {s.name: PENDING for s in spec.pipeline.steps}
    fake.set_status(PYTORCHJOBS, NAMESPACE, spec.run_name, {"conditions": [
        {"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}],
        "startTime": "2026-01-01T10:00:00Z"})
    wait_for(lambda: runs.status(spec.run_name).phase == RUNNING)
    for rank in range(4):
        rank_pod(fake, spec.run_name, rank, {"phase": SUCCEEDED, "outputs": {"evaluate": {"rank": rank}}}, torch=True)
    fake.set_status(PYTORCHJOBS, NAMESPACE, spec.run_name, {"conditions": [
        {"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
        {"type": "Succeeded", "status": "True", "lastTransitionTime": "2026-01-01T10:05:00Z"}],
        "startTime": "2026-01-01T10:00:00Z", "completionTime": "2026-01-01T10:05:00Z"})
    status = wait_for(lambda: (s := runs.status(spec.run_name)) and s.terminal and s)
    assert status.phase == SUCCEEDED and status.outputs == {"evaluate": {"rank": 0}}  # the Master's report
    assert status.finished_at is not None and runs.spec(spec.run_name) == spec


def test_pytorchjob_failure_names_the_worker_rank(fake, launcher):
    spec = launch_spec(model="torch")
    runs = launcher()
    runs.submit(spec)
    assert runs.wait_synced()
    rank_pod(fake, spec.run_name, 0, {"phase": SUCCEEDED}, torch=True)
    rank_pod(fake, spec.run_name, 3, {"phase": FAILED, "reason": "step train exited with code 1"}, log="NCCL timeout",
             torch=True)
    fake.set_status(PYTORCHJOBS, NAMESPACE, spec.run_name, {"conditions": [
        {"type": "Running", "status": "False"},
        {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed",
         "message": "PyTorchJob ml/x has failed because 1 Worker replica(s) failed."}]})
    status = wait_for(lambda: (s := runs.status(spec.run_name)) and s.terminal and s)
    assert status.phase == FAILED
    assert status.reason.startswith("rank 3: PyTorchJobFailed: PyTorchJob ml/x has failed")
    assert status.reason.endswith("step train exited with code 1")
    assert status.log_tail == ("NCCL timeout",)


# --- RBAC: the chart's Role against what the distributed launchers requested ---------------------


def distributed_permissions() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of a distributed launcher's whole life: Lease, submit and redelivery
    of both kinds, watch, runs reported by the real Trainer, acknowledgement, look-up, release."""
    fake = FakeKube().start()
    client = KubeClient.for_host(fake.url)
    clock = FakeClock()
    lease = Lease(client, NAMESPACE, lease_name(OWNER), "worker-0", clock=clock)
    runs = KubernetesJobLauncher(client, {"classifier": pod_settings(), "torch": pod_settings()}, OWNER,
                                 watch_timeout=5, lease=lease, distributed={"classifier": INDEXED, "torch": TORCH})
    try:
        indexed, torch = launch_spec(), launch_spec(model="torch")
        assert runs.submit(indexed) and runs.submit(torch)
        assert not runs.submit(indexed) and not runs.submit(torch)
        assert runs.wait_synced()
        rank_pod(fake, indexed.run_name, 0, {"phase": SUCCEEDED, "outputs": {"evaluate": {"candidate_version": "3"}}})
        rank_pod(fake, torch.run_name, 1, {"phase": FAILED, "reason": "boom"}, log="boom", torch=True)
        fake.set_status(JOBS, NAMESPACE, indexed.run_name, complete())
        fake.set_status(PYTORCHJOBS, NAMESPACE, torch.run_name, {"conditions": [
            {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed"}]})
        ctx = TrainerContext({"kubernetes": runs})
        trainer = Trainer(ctx, {})
        wait_for(lambda: asyncio.run(trainer.watch()) or len(ctx.published) == 2)
        reported = {type(data): data for data, _, _ in ctx.published}
        assert reported[ev.TrainingFailed].log_tail == ["boom"]
        assert reported[ev.TrainingSucceeded].run_name == indexed.run_name
        for resource in (JOBS, PYTORCHJOBS):
            assert all(ANN_REPORTED in o["metadata"]["annotations"] for o in fake.list(resource, NAMESPACE))
        other = KubernetesJobLauncher(client, {"torch": pod_settings()}, OWNER, distributed={"torch": TORCH})
        assert other.spec(torch.run_name) == torch                  # a worker that has not watched
        lease.release()
    finally:
        runs.close()
        client.close()
        fake.stop()
    return fake.permissions_used()


def test_the_role_grants_exactly_what_distributed_runs_need():
    from tests.k8s.lifecycle import permissions_used
    from tests.k8s.test_helm import by_kind, grants, manifests

    used = distributed_permissions()
    assert {("", "services", "create"), ("kubeflow.org", "pytorchjobs", "create"),
            ("kubeflow.org", "pytorchjobs", "watch"), ("kubeflow.org", "pytorchjobs", "patch"),
            ("kubeflow.org", "pytorchjobs", "get")} <= used
    assert not any(r == "services" and v != "create" for _, r, v in used)   # owned by the Job: no delete
    (role,) = by_kind(manifests({"config": config(("kubernetes", "indexed"), ("kubernetes", "pytorchjob"))}), "Role")
    validate_k8s(role)
    granted = grants(role)
    assert used - granted == set()
    plain = permissions_used("kubernetes") | permissions_used("argo")
    assert granted - (used | plain) == set()                        # least privilege
    # Granted only for what loopline.yaml (the chart's `config`) asks for.
    extra = {"services", "pytorchjobs"}
    for models, wanted in [((), set()), ((("local", "indexed"),), set()),
                           ((("kubernetes", "default"), ("kubernetes", None)), {"services"}),
                           ((("kubernetes", "pytorchjob"),), {"pytorchjobs"})]:
        (role,) = by_kind(manifests({"config": config(*models)}), "Role")
        assert {r for _, r, _ in grants(role)} & extra == wanted, models


def config(*models: tuple[str, str | None]) -> dict:
    """The chart's `config` (loopline.yaml) with one model per (launcher, distributed mode or None)."""
    out = [{"name": "plain", "pipeline": {"launcher": "kubernetes", "steps": STEPS}, "gate": {"from_step": "train"}}]
    for index, (launcher, mode) in enumerate(models):
        distributed = {"workers": 2} if mode == "default" else {"workers": 2, "mode": mode}
        kubernetes = {"distributed": distributed} if mode else {}
        out.append({"name": f"m{index}", "gate": {"from_step": "train"},
                    "pipeline": {"launcher": launcher, "steps": STEPS, "kubernetes": kubernetes}})
    return {"models": out}
