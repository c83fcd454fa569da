"""Launchers that run pipelines on a cluster: Kubernetes Jobs and Argo Workflows.

Both implement the agents' `Launcher` port exactly like `LocalLauncher`:

- submit(spec) renders the object (pure, `render_job` / `render_workflow`) and creates
  it under the run name; 409 AlreadyExists returns False (a redelivered request
  starts nothing);
- a watch thread per namespace (`kube.Watcher`: list, watch from the resourceVersion,
  resume after disconnects, re-list on 410 Gone) keeps the latest RunStatus of
  every run this deployment owns; poll() returns the runs whose phase changed since
  the last poll() (first call: every unacknowledged run);
- mark_reported(run) deletes the object (and its pods): the outcome is on the bus by
  then (outputs, reason, log tail) and in MLflow, and a restarted worker cannot report
  a run that no longer exists. Deletion is the acknowledgement because the worker's
  Role has no `patch` (jobs/workflows: create, get, list, watch, delete; pods and logs:
  get, list). Objects being deleted (deletionTimestamp set) count as acknowledged.
  Until then ttlSecondsAfterFinished must outlast the worker's longest downtime;
- spec(run) rebuilds the LaunchSpec from the object's annotation.

A terminal run is final: its status (with the pod's report and log tail, fetched
once, in the watch thread) is cached until acknowledged, also if the object is
deleted meanwhile. A run deleted before it finished is reported Failed ("deleted").
Only the worker whose trainer polls (the Faust leader) watches; a former leader that
still watches forgets deleted runs instead of keeping them for a report it won't make.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from triggers import kube
from triggers.pipeline import FAILED, TERMINAL_PHASES, LaunchSpec, RunStatus
from triggers.podspec import (
    PodSettings,
    RenderError,
    owner_selector,
    spec_from_annotations,
)
from triggers.render_job import CONTAINER, job_status, parse_report, render_job
from triggers.render_workflow import failed_pod_node, render_workflow, workflow_status

__all__ = ["ArgoWorkflowLauncher", "ClusterLauncher", "KubernetesJobLauncher"]

log = logging.getLogger("loopline.cluster")
LOG_TAIL_LINES = 20
# A launcher polled within this many seconds is the one that reports runs (the leader's).
REPORTER_WINDOW = 60.0


class ClusterLauncher:
    kind = "cluster"
    resource: kube.Resource

    def __init__(self, client: kube.KubeClient, pods: Mapping[str, PodSettings], owner: str,
                 watch_timeout: int = 300) -> None:
        self.client = client
        self.pods = dict(pods)
        self.owner = owner
        self.selector = owner_selector(owner)
        self.watch_timeout = watch_timeout
        self._lock = threading.RLock()
        self._status: dict[str, RunStatus] = {}
        self._annotations: dict[str, Mapping[str, str]] = {}
        self._namespace: dict[str, str] = {}
        self._last_phase: dict[str, str] = {}
        self._done: set[str] = set()
        self._undeleted: set[str] = set()  # acknowledged, deletion still to do
        self._watchers: dict[str, kube.Watcher] = {}
        self._last_poll = float("-inf")

    # --- the Launcher port ------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> bool:
        pod = self.pods.get(spec.model)
        if pod is None:
            raise RenderError(f"model {spec.model!r} has no {self.kind} settings in this worker")
        body = self.render(spec, pod)  # watching starts with poll(): only the worker that reports watches
        return self.client.create(self.resource, pod.namespace, body)

    def poll(self) -> list[RunStatus]:
        self._last_poll = time.monotonic()
        self._ensure_watching()
        self._retry_deletes()
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
            self._undeleted.add(run_name)
        self._retry_deletes()

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
            gone = [name for name, ns in self._namespace.items()
                    if ns == namespace and name not in present and name not in self._done]
        for name in gone:  # deleted while we were not watching
            self._forget_or_fail(name)

    def _on_event(self, namespace: str, etype: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if etype == "DELETED":
            with self._lock:
                if name in self._done:  # reported and now gone: nothing will mention it again
                    self._done.discard(name)
                    self._namespace.pop(name, None)
                    self._last_phase.pop(name, None)
                    return
        if meta.get("deletionTimestamp"):
            with self._lock:  # acknowledged (being deleted), maybe by a previous worker
                self._done.add(name)
                self._status.pop(name, None)
            return
        with self._lock:
            if name in self._done:
                return
            self._namespace[name] = namespace
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
        """The object is gone: report it as failed if it was running, unless nobody polls us."""
        with self._lock:
            cached = self._status.get(name)
            if time.monotonic() - self._last_poll > REPORTER_WINDOW:
                # Another worker is the one that reports (and deleted it after reporting): forget it.
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

    def _retry_deletes(self) -> None:
        with self._lock:
            pending = [(name, self._namespace.get(name)) for name in self._undeleted]
        for name, namespace in pending:
            if namespace is not None:
                try:
                    self.client.delete(self.resource, namespace, name)
                except Exception as exc:  # noqa: BLE001 - API down: the next poll() retries
                    log.warning("%s %s/%s: cannot delete yet (%s); will retry", self.resource.kind,
                                namespace, name, exc)
                    continue
            with self._lock:
                self._undeleted.discard(name)
                self._annotations.pop(name, None)


class KubernetesJobLauncher(ClusterLauncher):
    """One batch/v1 Job per run; see triggers.render_job for the mapping."""

    kind = "kubernetes"
    resource = kube.JOBS

    def render(self, spec: LaunchSpec, pod: PodSettings) -> dict[str, Any]:
        return render_job(spec, pod, self.owner)

    def to_status(self, obj: dict[str, Any]) -> RunStatus:
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
