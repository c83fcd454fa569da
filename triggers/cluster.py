"""Launchers that run pipelines on a cluster: Kubernetes Jobs and Argo Workflows.

Both implement the agents' `Launcher` port exactly like `LocalLauncher`:

- submit(spec) renders the object (pure, `render_job` / `render_workflow`) and creates
  it under the run name; 409 AlreadyExists returns False (a redelivered request
  starts nothing);
- a watch thread per namespace (`kube.Watcher`: list, watch from the resourceVersion,
  resume after disconnects, re-list on 410 Gone) keeps the latest RunStatus of
  every run this deployment owns; poll() returns the runs whose phase changed since
  the last poll() (first call, and first call of a new leadership term: every
  unacknowledged run), and nothing while another worker holds the Lease;
- mark_reported(run) annotates the object `loopline.io/reported: <time>` (a merge
  patch): the outcome is on the bus by then, and a run carrying the annotation is
  never reported again, by this worker, another one or one restarted. The object
  stays, with its pods, so `kubectl logs` of a failed training still works; the Job
  controller (ttlSecondsAfterFinished) or Argo (ttlStrategy) removes it after the
  configured retention, which must also outlast the worker's longest downtime;
- spec(run) rebuilds the LaunchSpec from the object's annotation.

Distributed runs (`pipeline.kubernetes.distributed`, triggers.render_distributed): the Job
launcher creates an Indexed Job, then its headless Service owned by the Job (409 on either is
the redelivery: the Service is still made sure of, with the existing Job's uid); models in
mode `pytorchjob` go to a PyTorchJob launcher inside it (its own watch on kubeflow.org
pytorchjobs), so the trainer still sees one `kubernetes` launcher.

Sweeps (a step with `sweep:`, triggers.sweep): the Job launcher creates the run's Job and, owned
by it, one trial Indexed Job per sweep step (triggers.render_sweep); the run's pod opens the
study when the pipeline reaches the step and waits for the trial pods. The trial Jobs carry no
owner label: the watcher sees one run. On Argo the sweep is a fan-out inside the Workflow.

Which worker reports: the holder of a coordination.k8s.io Lease (triggers.lease), asked
on every poll(); `leads()` says, without an API call, whether this worker may still
report (the trainer asks before each report). Without a Lease (one worker, tests) the
launcher always leads.

A terminal run is final: its status (with the pod's report and log tail, fetched
once, in the watch thread) is cached until acknowledged, also if the object is
deleted meanwhile. A run deleted before it finished is reported Failed ("deleted")
by the leader; a worker that watches without leading forgets it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from triggers import kube
from triggers.lease import Lease
from triggers.per_model import PerModel
from triggers.pipeline import FAILED, TERMINAL_PHASES, LaunchSpec, RunStatus
from triggers.podspec import (
    ANN_REPORTED,
    PodSettings,
    RenderError,
    owner_selector,
    spec_from_annotations,
)
from triggers.render_distributed import (
    Distributed,
    PYTORCH_CONTAINER,
    PYTORCH_JOB_NAME_LABEL,
    distributed_job_status,
    failed_rank,
    pod_rank,
    pytorchjob_status,
    render_indexed_job,
    render_pytorchjob,
    render_service,
)
from triggers.render_job import CONTAINER, job_status, parse_report, render_job
from triggers.render_sweep import render_trial_jobs, sweep_steps
from triggers.render_workflow import failed_pod_node, render_workflow, workflow_status

__all__ = ["ArgoWorkflowLauncher", "ClusterLauncher", "KubernetesJobLauncher", "PyTorchJobLauncher"]

log = logging.getLogger("loopline.cluster")
LOG_TAIL_LINES = 20


class ClusterLauncher:
    kind = "cluster"
    resource: kube.Resource

    def __init__(self, client: kube.KubeClient, pods: Mapping[str, PodSettings], owner: str,
                 watch_timeout: int = 300, lease: Lease | None = None) -> None:
        self.client = client
        self.lease = lease
        self._term = 0
        self.pods = PerModel(pods)          # a family's member reads its family's entry
        self.owner = owner
        self.selector = owner_selector(owner)
        self.watch_timeout = watch_timeout
        self._lock = threading.RLock()
        self._status: dict[str, RunStatus] = {}
        self._annotations: dict[str, Mapping[str, str]] = {}
        self._namespace: dict[str, str] = {}
        self._last_phase: dict[str, str] = {}
        self._done: set[str] = set()       # acknowledged: never reported again
        self._unmarked: set[str] = set()   # acknowledged, the annotation still to write
        self._watchers: dict[str, kube.Watcher] = {}

    # --- the Launcher port ------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> bool:
        pod = self.pods.get(spec.model)
        if pod is None:
            raise RenderError(f"model {spec.model!r} has no {self.kind} settings in this worker")
        body = self.render(spec, pod)  # watching starts with poll(): only the worker that reports watches
        return self.client.create(self.resource, pod.namespace, body)

    def poll(self) -> list[RunStatus]:
        self._ensure_watching()  # also without the Lease: a follower that takes over knows the runs
        self._write_marks()
        if self.lease is not None:
            if not self.lease.held():
                return []
            if self.lease.term != self._term:  # leading again: what the last term left unreported counts
                with self._lock:
                    self._term = self.lease.term
                    self._last_phase.clear()
        with self._lock:
            changed = []
            for name, status in self._status.items():
                if name in self._done or status.phase == self._last_phase.get(name):
                    continue
                self._last_phase[name] = status.phase
                changed.append(status)
            return changed

    def mark_reported(self, run_name: str) -> None:
        with self._lock:
            last = self._last_phase.get(run_name)
            if last is not None and last not in TERMINAL_PHASES:
                return  # not what poll() said is final: a terminal status may still be on its way
            status = self._status.get(run_name)
            if status is None or not status.terminal:
                return
            self._done.add(run_name)
            self._status.pop(run_name, None)
            self._unmarked.add(run_name)
        self._write_marks()

    def leads(self) -> bool:
        """Whether this worker may report runs now (no API call; see triggers.lease)."""
        return self.lease is None or self.lease.leads()

    def spec(self, run_name: str) -> LaunchSpec | None:
        with self._lock:
            annotations = self._annotations.get(run_name)
            namespace = self._namespace.get(run_name)
        if annotations is None:
            for ns in ([namespace] if namespace else self._namespaces()):
                obj = self.client.get(self.resource, ns, run_name)
                if obj is not None:
                    annotations = (obj.get("metadata") or {}).get("annotations")
                    break
        return spec_from_annotations(annotations)

    def status(self, run_name: str) -> RunStatus | None:
        with self._lock:
            return self._status.get(run_name)

    def close(self) -> None:
        for watcher in list(self._watchers.values()):
            watcher.stop()
        self._watchers.clear()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        """Block until every namespace has been listed once (tests, start-up)."""
        self._ensure_watching()
        return all(w.synced.wait(timeout) for w in self._watchers.values())

    # --- subclass hooks ---------------------------------------------------------------

    def render(self, spec: LaunchSpec, pod: PodSettings) -> dict[str, Any]:
        raise NotImplementedError

    def to_status(self, obj: dict[str, Any]) -> RunStatus:
        """Status from an object; for a terminal one also what its pods tell (one-off API calls)."""
        raise NotImplementedError

    # --- watching ---------------------------------------------------------------------

    def _namespaces(self) -> list[str]:
        return sorted({pod.namespace for pod in self.pods.values()})

    def _ensure_watching(self) -> None:
        with self._lock:
            for namespace in self._namespaces():
                if namespace not in self._watchers:
                    watcher = kube.Watcher(
                        self.client, self.resource, namespace, self.selector,
                        on_snapshot=lambda items, ns=namespace: self._on_snapshot(ns, items),
                        on_event=lambda etype, obj, ns=namespace: self._on_event(ns, etype, obj),
                        timeout_seconds=self.watch_timeout)
                    self._watchers[namespace] = watcher
                    watcher.start()

    def _on_snapshot(self, namespace: str, items: list[dict[str, Any]]) -> None:
        present = set()
        for obj in items:
            present.add(obj["metadata"]["name"])
            self._on_event(namespace, "ADDED", obj)
        with self._lock:
            gone = [name for name, ns in self._namespace.items() if ns == namespace and name not in present]
        for name in gone:  # deleted while we were not watching
            self._on_event(namespace, "DELETED", {"metadata": {"name": name}})

    def _on_event(self, namespace: str, etype: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        reported = ANN_REPORTED in (meta.get("annotations") or {})
        with self._lock:
            if reported or name in self._done:  # acknowledged, maybe by another worker or before a restart
                for table in (self._status, self._annotations, self._last_phase):
                    table.pop(name, None)
                if reported:
                    self._unmarked.discard(name)
                if etype == "DELETED":  # removed (TTL): nothing will mention it again
                    self._done.discard(name)
                    self._unmarked.discard(name)
                    self._namespace.pop(name, None)
                else:
                    self._done.add(name)
                    self._namespace[name] = namespace
                return
            self._namespace[name] = namespace
            if etype != "DELETED":  # a deleted run's spec is still read from what we saw last
                self._annotations[name] = dict(meta.get("annotations") or {})
            cached = self._status.get(name)
        if etype == "DELETED":
            self._forget_or_fail(name)
            return
        if cached is not None and cached.terminal:
            return  # final; the pods were read once already
        try:
            status = self.to_status(obj)
        except Exception as exc:  # noqa: BLE001 - a bad object must not stop the watch
            log.warning("%s %s/%s: cannot read status: %s", self.resource.kind, namespace, name, exc)
            return
        with self._lock:
            if name not in self._done:
                self._status[name] = status

    def _forget_or_fail(self, name: str) -> None:
        """The object is gone before it was reported: a failure if it was running, unless we do not lead."""
        with self._lock:
            cached = self._status.get(name)
            if not self.leads():  # the leader reports it; keeping it could report it twice later
                for table in (self._status, self._namespace, self._annotations, self._last_phase):
                    table.pop(name, None)
                return
            if cached is not None and cached.terminal:
                return  # still to be reported
            self._status[name] = RunStatus(
                run_name=name, model=cached.model if cached else "", phase=FAILED,
                outputs=cached.outputs if cached else {}, steps=cached.steps if cached else {},
                reason=f"{self.resource.kind} was deleted before it finished",
                started_at=cached.started_at if cached else None)

    def _write_marks(self) -> None:
        """Annotate the acknowledged runs (retried on every poll() while the API is away)."""
        with self._lock:
            pending = [(name, self._namespace.get(name)) for name in self._unmarked]
        mark = {"metadata": {"annotations": {
            ANN_REPORTED: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}}
        for name, namespace in pending:
            if namespace is not None:
                try:
                    self.client.patch(self.resource, namespace, name, mark)  # None: gone already
                except Exception as exc:  # noqa: BLE001 - API down: the next poll() retries
                    log.warning("%s %s/%s: cannot mark it reported yet (%s); will retry", self.resource.kind,
                                namespace, name, exc)
                    continue
            with self._lock:
                self._unmarked.discard(name)
                self._annotations.pop(name, None)


def _rank_reports(client: kube.KubeClient, namespace: str, selector: str, container: str
                  ) -> tuple[dict[int, Any], dict[int, str]]:
    """({rank: report or None}, {rank: pod name}) of a distributed run's pods (the newest pod per rank)."""
    newest: dict[int, dict[str, Any]] = {}
    for pod in client.pods(namespace, selector):
        rank = pod_rank(pod)
        if rank is None:
            continue
        stamp = (pod.get("metadata") or {}).get("creationTimestamp") or ""
        if rank not in newest or stamp >= ((newest[rank].get("metadata") or {}).get("creationTimestamp") or ""):
            newest[rank] = pod
    reports: dict[int, Any] = {}
    for rank, pod in newest.items():
        reports[rank] = None
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == container:
                reports[rank] = parse_report(((cs.get("state") or {}).get("terminated") or {}).get("message"))
    return reports, {rank: pod["metadata"]["name"] for rank, pod in newest.items()}


def _distributed_status(client: kube.KubeClient, obj: dict[str, Any], selector: str, container: str, read):
    """Status of a terminal distributed run from its ranks' reports, with the failed rank's log tail."""
    status = read(obj)
    if not status.terminal:
        return status
    namespace = obj["metadata"].get("namespace") or "default"
    try:
        reports, pods = _rank_reports(client, namespace, selector, container)
        tail, rank = (), None
        if status.phase == FAILED:
            rank = failed_rank(reports)
            rank = rank if rank is not None else (0 if 0 in pods else None)
            if rank is not None:
                tail = client.log_tail(namespace, pods[rank], container, LOG_TAIL_LINES)
        return read(obj, reports, tail, rank)
    except Exception as exc:  # noqa: BLE001 - pods may be gone (TTL, eviction): the object's status counts
        log.info("%s %s: no pod reports (%s)", obj.get("kind"), status.run_name, exc)
        return status


class PyTorchJobLauncher(ClusterLauncher):
    """One kubeflow.org/v1 PyTorchJob per run (Training Operator v1); see triggers.render_distributed."""

    kind = "kubernetes"
    resource = kube.PYTORCHJOBS

    def __init__(self, client: kube.KubeClient, pods: Mapping[str, PodSettings], owner: str,
                 distributed: Mapping[str, Distributed], watch_timeout: int = 300, lease: Lease | None = None) -> None:
        super().__init__(client, pods, owner, watch_timeout, lease)
        self.distributed = PerModel(distributed)

    def render(self, spec: LaunchSpec, pod: PodSettings) -> dict[str, Any]:
        return render_pytorchjob(spec, pod, self.owner, self.distributed[spec.model])

    def to_status(self, obj: dict[str, Any]) -> RunStatus:
        return _distributed_status(self.client, obj, f"{PYTORCH_JOB_NAME_LABEL}={obj['metadata']['name']}",
                                   PYTORCH_CONTAINER, pytorchjob_status)


class KubernetesJobLauncher(ClusterLauncher):
    """One batch/v1 Job per run; see triggers.render_job for the mapping.

    `distributed` (model -> Distributed): those models run as an Indexed Job + headless Service,
    or (mode pytorchjob) as a PyTorchJob through the inner `self.pytorch` launcher.
    """

    kind = "kubernetes"
    resource = kube.JOBS

    def __init__(self, client: kube.KubeClient, pods: Mapping[str, PodSettings], owner: str,
                 watch_timeout: int = 300, lease: Lease | None = None,
                 distributed: Mapping[str, Distributed] | None = None) -> None:
        distributed = dict(distributed or {})
        torch = {m: d for m, d in distributed.items() if d.mode == "pytorchjob"}
        super().__init__(client, {m: p for m, p in pods.items() if m not in torch}, owner, watch_timeout, lease)
        self.indexed = PerModel({m: d for m, d in distributed.items() if m not in torch})
        self.pytorch = PyTorchJobLauncher(client, {m: p for m, p in pods.items() if m in torch}, owner, torch,
                                          watch_timeout, lease) if torch else None

    def render(self, spec: LaunchSpec, pod: PodSettings) -> dict[str, Any]:
        dist = self.indexed.get(spec.model)
        return render_indexed_job(spec, pod, self.owner, dist) if dist else render_job(spec, pod, self.owner)

    def submit(self, spec: LaunchSpec) -> bool:
        if self.pytorch is not None and spec.model in self.pytorch.pods:
            return self.pytorch.submit(spec)
        dist = self.indexed.get(spec.model)
        if dist is None and not sweep_steps(spec):
            return super().submit(spec)
        # The run's Job, then what it owns: a distributed run's headless Service, a sweep's trial Jobs.
        pod = self.pods[spec.model]
        job = self.client.create_object(kube.JOBS, pod.namespace, self.render(spec, pod))
        created = job is not None
        if job is None:  # a redelivery: the Job exists; what it owns may not (the last submit died in between)
            job = self.client.get(kube.JOBS, pod.namespace, spec.run_name)
            if job is None:
                raise kube.ApiError(f"Job {pod.namespace}/{spec.run_name} exists (409) but cannot be read", 409)
        if dist is not None:
            self.client.create(kube.SERVICES, pod.namespace, render_service(spec, pod, self.owner, dist, job))
        for trials in render_trial_jobs(spec, pod, self.owner, job):
            self.client.create(kube.JOBS, pod.namespace, trials)
        return created

    def to_status(self, obj: dict[str, Any]) -> RunStatus:
        if (obj.get("spec") or {}).get("completionMode") == "Indexed":
            return _distributed_status(self.client, obj, f"job-name={obj['metadata']['name']}", CONTAINER,
                                       distributed_job_status)
        status = job_status(obj)
        if not status.terminal:
            return status
        report, tail = None, ()
        namespace = obj["metadata"].get("namespace") or "default"
        try:
            pods = self.client.pods(namespace, f"job-name={status.run_name}")
            pod = max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)
            if pod is not None:
                for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                    if cs.get("name") == CONTAINER:
                        report = parse_report(((cs.get("state") or {}).get("terminated") or {}).get("message"))
                if status.phase == FAILED:
                    tail = self.client.log_tail(namespace, pod["metadata"]["name"], CONTAINER, LOG_TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - pods may be gone (TTL, eviction): the Job's status counts
            log.info("job %s: no pod report (%s)", status.run_name, exc)
        return job_status(obj, report, tail)


    # --- the PyTorchJob launcher inside: the trainer sees one `kubernetes` launcher ------------

    def poll(self) -> list[RunStatus]:
        changed = super().poll()
        return changed + self.pytorch.poll() if self.pytorch is not None else changed

    def mark_reported(self, run_name: str) -> None:
        super().mark_reported(run_name)
        if self.pytorch is not None:
            self.pytorch.mark_reported(run_name)

    def spec(self, run_name: str) -> LaunchSpec | None:
        found = super().spec(run_name) if self.pods else None
        return found if found is not None or self.pytorch is None else self.pytorch.spec(run_name)

    def status(self, run_name: str) -> RunStatus | None:
        found = super().status(run_name)
        return found if found is not None or self.pytorch is None else self.pytorch.status(run_name)

    def close(self) -> None:
        super().close()
        if self.pytorch is not None:
            self.pytorch.close()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        return super().wait_synced(timeout) and (self.pytorch is None or self.pytorch.wait_synced(timeout))


class ArgoWorkflowLauncher(ClusterLauncher):
    """One argoproj.io/v1alpha1 Workflow per run; see triggers.render_workflow for the mapping."""

    kind = "argo"
    resource = kube.ARGO_WORKFLOWS

    def render(self, spec: LaunchSpec, pod: PodSettings) -> dict[str, Any]:
        return render_workflow(spec, pod, self.owner)

    def to_status(self, obj: dict[str, Any]) -> RunStatus:
        status = workflow_status(obj)
        if status.phase != FAILED:
            return status
        node = failed_pod_node(obj)
        if node is None:
            return status
        namespace = obj["metadata"].get("namespace") or "default"
        try:
            pods = self.client.pods(namespace, f"workflows.argoproj.io/workflow={status.run_name}")
            for pod in pods:
                annotations = (pod.get("metadata") or {}).get("annotations") or {}
                if annotations.get("workflows.argoproj.io/node-id") == node.get("id") \
                        or pod["metadata"]["name"] == node.get("id"):
                    tail = self.client.log_tail(namespace, pod["metadata"]["name"], "main", LOG_TAIL_LINES)
                    return workflow_status(obj, tail)
        except Exception as exc:  # noqa: BLE001 - the pod may be gone (podGC): the Workflow's status counts
            log.info("workflow %s: no pod log (%s)", status.run_name, exc)
        return status
