"""Render a distributed run: an Indexed Job plus a headless Service, or a Kubeflow PyTorchJob.

Every rank is one pod running the whole pipeline (`python -m triggers.pod_entry job`, as a
plain Job does); each step therefore runs once per rank, at the same time on every pod, and
finds its peers through the torchrun environment contract:

    MASTER_ADDR   where rank 0 listens        MASTER_PORT   its port (distributed.port)
    WORLD_SIZE    N (the number of workers)   RANK          0..N-1
    LOCAL_RANK    0 (one process per pod)     NPROC_PER_NODE / LOCAL_WORLD_SIZE  1

mode `indexed` (plain Kubernetes, 1.29+): a batch/v1 Job with `completionMode: Indexed`,
`completions = parallelism = N`. The Job controller names pod i's host `<job>-<i>`; with
`subdomain: <service>` and a headless Service of that name selecting the Job's pods
(`publishNotReadyAddresses`, so peers resolve before they are Ready), rank 0 is reachable
as `<job>-0.<service>`. RANK comes from the completion index (Downward API,
`metadata.annotations['batch.kubernetes.io/job-completion-index']`). Retries: a rank that
fails cannot rejoin a running rendezvous, so per-index retries would only hang its peers:
`backoffLimitPerIndex: 0` and `maxFailedIndexes: 0` make the first failed rank fail the Job,
and the Job controller stops the other pods. The Service is owned by the Job
(`ownerReferences`, added by the launcher once the Job has a uid), so the garbage collector
removes it with the Job (ttlSecondsAfterFinished).

mode `pytorchjob` (a cluster with the Kubeflow Training Operator v1): a `kubeflow.org/v1`
PyTorchJob, Master (1 replica) + Worker (N-1), the same container. The operator creates the
Services and sets MASTER_ADDR / MASTER_PORT / WORLD_SIZE / RANK itself (from the port named
`pytorchjob-port` of the container named `pytorch`); we add only LOCAL_RANK and
NPROC_PER_NODE, and `nprocPerNode: "1"` so its WORLD_SIZE is N.

Status: the Job is Succeeded when `succeeded == completions` (or Complete); a PyTorchJob by its
conditions (Succeeded / Failed; Created, Running, Restarting are not final). Rank 0's report
(termination message) gives the outputs; a failed rank's report and log give the reason.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triggers.pipeline import FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, LaunchSpec, RunStatus
from triggers.podspec import GPU_RESOURCE, PodSettings, RenderError, label_value, object_labels
from triggers.render_job import CONTAINER, job_phase, job_status, parse_time, render_job

__all__ = [
    "COMPLETION_INDEX",
    "JOB_NAME_LABEL",
    "PYTORCH_CONTAINER",
    "PYTORCH_JOB_NAME_LABEL",
    "PYTORCH_PORT_NAME",
    "Distributed",
    "distributed_job_status",
    "failed_rank",
    "local_contract",
    "pod_rank",
    "pytorchjob_phase",
    "pytorchjob_status",
    "render_distributed",
    "render_indexed_job",
    "render_pytorchjob",
    "render_service",
    "report_container",
    "service_name",
    "owned_by_job",
]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"   # pod annotation (and label, 1.28+)
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"                 # set by the Job controller on its pods
PYTORCH_CONTAINER = "pytorch"            # the operator only configures the container of this name
PYTORCH_PORT_NAME = "pytorchjob-port"    # ... and reads MASTER_PORT from the port of this name
PYTORCH_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
PYTORCH_REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
PYTORCH_REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
INDEXED, PYTORCHJOB = "indexed", "pytorchjob"
MAX_HOSTNAME = 63


@dataclass(frozen=True)
class Distributed:
    """`pipeline.kubernetes.distributed` of one model, validated (loopline/kube_config.py)."""

    workers: int
    gpus_per_worker: int = 0
    port: int = 29500
    mode: str = INDEXED

    def __post_init__(self) -> None:
        if self.workers < 2:
            raise ValueError(f"workers must be at least 2, got {self.workers}")
        if self.mode not in (INDEXED, PYTORCHJOB):
            raise ValueError(f"mode must be {INDEXED} or {PYTORCHJOB}, got {self.mode!r}")


def local_contract(rank: int, workers: int, port: int) -> dict[str, str]:
    """The same contract on one machine: N processes on 127.0.0.1 (one node, N processes)."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(workers),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(workers),
            "NPROC_PER_NODE": str(workers), "NODE_RANK": "0"}


# --- rendering -----------------------------------------------------------------------


def render_distributed(spec: LaunchSpec, pod: PodSettings, owner: str, dist: Distributed) -> list[dict[str, Any]]:
    """The objects of one distributed run, in creation order (indexed: Job, then Service)."""
    if dist.mode == PYTORCHJOB:
        return [render_pytorchjob(spec, pod, owner, dist)]
    return [render_indexed_job(spec, pod, owner, dist), render_service(spec, pod, owner, dist)]


def _resources(pod: PodSettings, dist: Distributed) -> dict[str, dict[str, str]]:
    resources = pod.resources()
    if dist.gpus_per_worker:  # Kubernetes does not overcommit GPUs: limits (and requests, equal)
        for side in ("requests", "limits"):
            resources.setdefault(side, {})[GPU_RESOURCE] = str(dist.gpus_per_worker)
            resources[side] = dict(sorted(resources[side].items()))
    return resources


def _container(job: Mapping[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def _set_env(container: dict[str, Any], entries: Sequence[Mapping[str, Any]]) -> None:
    names = {e["name"] for e in entries}
    container["env"] = [e for e in container["env"] if e["name"] not in names] + [dict(e) for e in entries]


def render_indexed_job(spec: LaunchSpec, pod: PodSettings, owner: str, dist: Distributed) -> dict[str, Any]:
    """An Indexed Job with one pod per rank; see the module docstring."""
    if dist.mode != INDEXED:
        raise RenderError(f"mode {dist.mode!r} is not an Indexed Job")
    hostname = f"{spec.run_name}-{dist.workers - 1}"
    if len(hostname) > MAX_HOSTNAME:
        raise RenderError(
            f"run {spec.run_name}: pod hostnames <run>-<index> (e.g. {hostname!r}) would exceed {MAX_HOSTNAME} "
            f"characters; use a shorter model name for distributed runs")
    job = render_job(spec, pod, owner)
    container = _container(job)
    _set_env(container, [
        {"name": "MASTER_ADDR", "value": f"{spec.run_name}-0.{service_name(spec)}"},
        {"name": "MASTER_PORT", "value": str(dist.port)},
        {"name": "WORLD_SIZE", "value": str(dist.workers)},
        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
        {"name": "LOCAL_RANK", "value": "0"},
        {"name": "LOCAL_WORLD_SIZE", "value": "1"},
        {"name": "NPROC_PER_NODE", "value": "1"},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
    ])
    container["ports"] = [{"name": "rendezvous", "containerPort": dist.port, "protocol": "TCP"}]
    resources = _resources(pod, dist)
    if resources:
        container["resources"] = resources
    job["spec"]["template"]["spec"]["subdomain"] = service_name(spec)
    job["spec"].pop("backoffLimit", None)  # per index instead (defaults to MaxInt32 then)
    job["spec"].update(completionMode="Indexed", completions=dist.workers, parallelism=dist.workers,
                       backoffLimitPerIndex=0, maxFailedIndexes=0)
    return job


def service_name(spec: LaunchSpec) -> str:
    """The headless Service's name: the run name (run names start with a letter: a DNS-1035 label)."""
    return spec.run_name


def render_service(spec: LaunchSpec, pod: PodSettings, owner: str, dist: Distributed,
                   job: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The headless Service that gives the Job's pods DNS names; owned by `job` when given (its uid)."""
    meta: dict[str, Any] = {"name": service_name(spec), "namespace": pod.namespace,
                            "labels": object_labels(spec, pod, owner)}
    if job is not None:
        meta["ownerReferences"] = [owned_by_job(job)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,   # ranks find rank 0 before any of them is Ready
            "selector": {JOB_NAME_LABEL: label_value(spec.run_name)},
            "ports": [{"name": "rendezvous", "port": dist.port, "targetPort": dist.port, "protocol": "TCP"}],
        },
    }


def owned_by_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to the created Job: what it owns (a rank Service, a sweep's trial Job) goes
    when the Job goes (no delete verb needed)."""
    meta = job["metadata"]
    if not meta.get("uid"):
        raise RenderError(f"Job {meta.get('name')} has no uid yet: own objects by the created Job")
    return {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}


def render_pytorchjob(spec: LaunchSpec, pod: PodSettings, owner: str, dist: Distributed) -> dict[str, Any]:
    """A kubeflow.org/v1 PyTorchJob: Master x1 + Worker x(N-1), the same container."""
    if dist.mode != PYTORCHJOB:
        raise RenderError(f"mode {dist.mode!r} is not a PyTorchJob")
    job = render_job(spec, pod, owner)  # the container, labels and annotations of a plain run
    container = _container(job)
    container["name"] = PYTORCH_CONTAINER
    _set_env(container, [{"name": "LOCAL_RANK", "value": "0"}, {"name": "LOCAL_WORLD_SIZE", "value": "1"},
                         {"name": "NPROC_PER_NODE", "value": "1"}])
    container["ports"] = [{"name": PYTORCH_PORT_NAME, "containerPort": dist.port, "protocol": "TCP"}]
    resources = _resources(pod, dist)
    if resources:
        container["resources"] = resources
    template = job["spec"]["template"]
    template["spec"].pop("restartPolicy", None)  # the replica's restartPolicy overrides it

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "Never",
                "template": json.loads(json.dumps(template))}

    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": 0}
    for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if key in job["spec"]:
            run_policy[key] = job["spec"][key]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": job["metadata"],
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(dist.workers - 1)},
        },
    }


# --- reading status back -----------------------------------------------------------------


def pod_rank(pod: Mapping[str, Any]) -> int | None:
    """A pod's rank: its completion index (Indexed Job) or replica type + index (PyTorchJob)."""
    meta = pod.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    index = annotations.get(COMPLETION_INDEX, labels.get(COMPLETION_INDEX))
    if index is None and PYTORCH_REPLICA_TYPE_LABEL in labels:
        offset = 0 if str(labels[PYTORCH_REPLICA_TYPE_LABEL]).lower() == "master" else 1
        index = labels.get(PYTORCH_REPLICA_INDEX_LABEL)
        return int(index) + offset if str(index).isdigit() else None
    return int(index) if str(index).isdigit() else None


def failed_rank(reports: Mapping[int, Mapping[str, Any] | None]) -> int | None:
    """The rank that failed the run: the lowest whose report says Failed for a reason of its own;
    ranks the controller stopped because of it report "cancelled" and come only after."""
    failed = sorted(rank for rank, report in reports.items() if report and report.get("phase") == FAILED)
    own = [rank for rank in failed if not str((reports[rank] or {}).get("reason") or "").startswith("cancelled")]
    return (own or failed or [None])[0]


def distributed_job_status(job: Mapping[str, Any], reports: Mapping[int, Mapping[str, Any] | None] | None = None,
                           log_tail: Sequence[str] = (), log_rank: int | None = None) -> RunStatus:
    """RunStatus of an Indexed Job: Succeeded when every index succeeded; rank 0's outputs."""
    reports = dict(reports or {})
    spec_ = job.get("spec") or {}
    status = job.get("status") or {}
    completions = spec_.get("completions")
    phase, _, _ = job_phase(job)
    if phase not in (SUCCEEDED, FAILED) and completions and status.get("succeeded") == completions:
        done = dict(job)
        done["status"] = {**status, "conditions": [*(status.get("conditions") or []),
                                                   {"type": "Complete", "status": "True"}]}
        job = done
    rank = failed_rank(reports)
    base = job_status(job, _rank_report(reports, rank), log_tail)
    return _with_rank(base, rank if rank is not None else log_rank)


def _rank_report(reports: Mapping[int, Mapping[str, Any] | None], failed: int | None) -> Mapping[str, Any] | None:
    """Rank 0's report, with the failed rank's phase and reason when a rank failed."""
    report = dict(reports.get(0) or {})
    if failed is not None:
        bad = reports[failed] or {}
        report.update(phase=FAILED, reason=bad.get("reason"))
        steps = dict(report.get("steps") or {})
        steps.update(bad.get("steps") or {})
        report["steps"] = steps
    return report or None


def _with_rank(status: RunStatus, rank: int | None) -> RunStatus:
    if status.phase != FAILED or rank is None:
        return status
    return RunStatus(run_name=status.run_name, model=status.model, phase=status.phase, outputs=status.outputs,
                     steps=status.steps, reason=f"rank {rank}: {status.reason}", log_tail=status.log_tail,
                     started_at=status.started_at, finished_at=status.finished_at)


def pytorchjob_phase(obj: Mapping[str, Any]) -> tuple[str, str | None, float | None]:
    """(phase, reason, finished at) from a PyTorchJob's conditions (the last True one counts)."""
    status = obj.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    for cond in conditions:
        if cond.get("type") == "Succeeded":
            return SUCCEEDED, None, parse_time(status.get("completionTime")) or parse_time(cond.get("lastTransitionTime"))
    for cond in conditions:
        if cond.get("type") == "Failed":
            reason, message = cond.get("reason") or "Failed", cond.get("message")
            return FAILED, f"{reason}: {message}" if message else reason, parse_time(cond.get("lastTransitionTime"))
    if any(c.get("type") in ("Running", "Restarting") for c in conditions):
        return RUNNING, None, None
    return PENDING, None, None


def pytorchjob_status(obj: Mapping[str, Any], reports: Mapping[int, Mapping[str, Any] | None] | None = None,
                      log_tail: Sequence[str] = (), log_rank: int | None = None) -> RunStatus:
    """RunStatus of a PyTorchJob, with its ranks' reports (rank 0 = the Master's)."""
    meta = obj.get("metadata") or {}
    phase, k8s_reason, finished = pytorchjob_phase(obj)
    reports = dict(reports or {})
    rank = failed_rank(reports)
    report = _rank_report(reports, rank) or {}
    steps = {name: PENDING for name in _step_names(obj)}
    if isinstance(report.get("steps"), Mapping):
        steps.update({str(k): str(v) for k, v in report["steps"].items()})
    if phase == SUCCEEDED:
        steps = {k: (v if v in (SUCCEEDED, SKIPPED) else SUCCEEDED) for k, v in steps.items()}
    reason = None
    if phase == FAILED:
        step_reason = report.get("reason") if report.get("phase") == FAILED else None
        reason = ": ".join(p for p in (k8s_reason, step_reason) if p) or "Failed"
    outputs = report.get("outputs") if isinstance(report.get("outputs"), Mapping) else {}
    status = obj.get("status") or {}
    result = RunStatus(
        run_name=str(meta.get("name", "")),
        model=str((meta.get("annotations") or {}).get("loopline.io/model", "")),
        phase=phase,
        outputs={str(k): dict(v) for k, v in outputs.items() if isinstance(v, Mapping)},
        steps=steps,
        reason=reason,
        log_tail=tuple(log_tail) if phase == FAILED else (),
        started_at=parse_time(status.get("startTime")),
        finished_at=finished,
    )
    return _with_rank(result, rank if rank is not None else log_rank)


def _step_names(obj: Mapping[str, Any]) -> list[str]:
    try:
        master = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in master.get("env") or []}
        return [str(step["name"]) for step in json.loads(env.get("LOOPLINE_PIPELINE") or "{}").get("steps") or []]
    except (KeyError, IndexError, TypeError, ValueError):
        return []


def report_container(mode: str) -> str:
    """The container whose termination message carries a rank's report."""
    return PYTORCH_CONTAINER if mode == PYTORCHJOB else CONTAINER
