"""The one module that talks to the Kubernetes API (through the official `kubernetes` client).

Everything else in `triggers` renders plain dicts and reads plain dicts; this module
creates, reads, lists, watches and patches them:

- `connect()` builds an API client from in-cluster config or a kubeconfig (+ context).
- `KubeClient` wraps the calls the launchers need, for Jobs (batch/v1) and Argo
  Workflows (a custom object): create (409 AlreadyExists -> False), get, list,
  watch, a JSON merge patch (the "reported" annotation), and the pods/logs of a run;
  for the run watcher's leader election, get / create / replace of a
  coordination.k8s.io/v1 Lease (replace is conditional on the resourceVersion: 409
  Conflict -> None). Objects are plain JSON dicts. These are exactly the verbs the
  Helm chart's Role grants (no delete, no secrets). Distributed runs add a core/v1
  Service (create only: it is owned by its Job, the garbage collector removes it) and
  Kubeflow PyTorchJobs (a custom object, like Workflows).
- `Watcher` is a thread that follows one resource in one namespace: list, then watch
  from the list's resourceVersion; after a disconnect it resumes from the last
  resourceVersion it saw, so no change is lost; on 410 Gone (the server compacted
  past that version) it lists again and hands the launcher the full current state.

Blocking I/O only, in the callers' threads (the watcher has its own): never call
these on an event loop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

__all__ = ["ARGO_WORKFLOWS", "JOBS", "LEASES", "PYTORCHJOBS", "SERVICES", "ApiError", "Gone", "KubeClient", "Resource", "Watcher", "connect"]

log = logging.getLogger("loopline.kube")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


JOBS = Resource("batch", "v1", "jobs", "Job")
ARGO_WORKFLOWS = Resource("argoproj.io", "v1alpha1", "workflows", "Workflow")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
SERVICES = Resource("", "v1", "services", "Service")
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
MERGE_PATCH = "application/merge-patch+json"  # custom resources take no strategic merge patch


class ApiError(RuntimeError):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion is too old; list again."""


def connect(in_cluster: bool | None = None, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
    """API client from the pod's service account (in-cluster) or a kubeconfig file.

    in_cluster=None means "auto": in-cluster when KUBERNETES_SERVICE_HOST is set.
    """
    configuration = k8s.Configuration()
    if in_cluster is None:
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    return KubeClient(k8s.ApiClient(configuration))


def _error(exc: ApiException, what: str) -> ApiError:
    reason = exc.reason
    try:
        body = json.loads(exc.body) if exc.body else {}
        reason = body.get("message") or reason
    except (TypeError, ValueError):
        pass
    cls = Gone if exc.status == 410 else ApiError
    return cls(f"{what}: {exc.status} {reason}", exc.status or 0)


class KubeClient:
    def __init__(self, api_client: k8s.ApiClient, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.batch = k8s.BatchV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.timeout = request_timeout

    @classmethod
    def for_host(cls, host: str, token: str | None = None) -> KubeClient:
        """A client for an API server at a URL (tests, `kubectl proxy`)."""
        configuration = k8s.Configuration(host=host)
        if token:
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return cls(k8s.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    def _call(self, request, what: str, absent: int | None = None) -> dict[str, Any] | None:
        """`request(**transport options)`'s JSON; None when the API answers `absent` (404: not
        there, 409: taken or stale), any other error as ApiError/Gone naming `what`."""
        try:
            resp = request(_preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            if absent is not None and exc.status == absent:
                return None
            raise _error(exc, what) from None
        return json.loads(resp.data)

    # --- objects ------------------------------------------------------------------

    def create(self, res: Resource, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create; False if an object of that name already exists (409: idempotent success)."""
        return self.create_object(res, namespace, body) is not None

    def create_object(self, res: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; the created object (with its uid), or None if that name exists (409)."""
        if res is JOBS:
            request = partial(self.batch.create_namespaced_job, namespace, dict(body))
        elif res is SERVICES:
            request = partial(self.core.create_namespaced_service, namespace, dict(body))
        else:
            request = partial(self.custom.create_namespaced_custom_object, res.group, res.version, namespace,
                              res.plural, dict(body))
        return self._call(request, f"create {res.kind} {namespace}/{body['metadata']['name']}", absent=409)

    def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        if res is JOBS:
            request = partial(self.batch.read_namespaced_job, name, namespace)
        else:
            request = partial(self.custom.get_namespaced_custom_object, res.group, res.version, namespace,
                              res.plural, name)
        return self._call(request, f"get {res.kind} {namespace}/{name}", absent=404)

    def list(self, res: Resource, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """(items, resourceVersion of the list)."""
        try:
            resp = self._list_func(res)(*self._list_args(res, namespace), label_selector=selector,
                                        _preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            raise _error(exc, f"list {res.plural} in {namespace}") from None
        data = json.loads(resp.data)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

    def patch(self, res: Resource, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch (RFC 7386); the patched object, None if it is gone (404).

        A `metadata.resourceVersion` in the patch makes it conditional (ApiError 409 when stale).
        """
        if res is JOBS:
            request = partial(self.batch.patch_namespaced_job, name, namespace, dict(patch),
                              _content_type=MERGE_PATCH)
        else:
            request = partial(self.custom.patch_namespaced_custom_object, res.group, res.version, namespace,
                              res.plural, name, dict(patch), _content_type=MERGE_PATCH)
        return self._call(request, f"patch {res.kind} {namespace}/{name}", absent=404)

    # --- leases -----------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(partial(self.coordination.read_namespaced_lease, name, namespace),
                          f"get Lease {namespace}/{name}", absent=404)

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Lease; None if one of that name exists (409: another candidate was first)."""
        return self._call(partial(self.coordination.create_namespaced_lease, namespace, dict(body)),
                          f"create Lease {namespace}/{body['metadata']['name']}", absent=409)

    def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Update, conditional on body's metadata.resourceVersion; None on 409 (someone wrote since)."""
        name = body["metadata"]["name"]
        return self._call(partial(self.coordination.replace_namespaced_lease, name, namespace, dict(body)),
                          f"update Lease {namespace}/{name}", absent=409)

    # --- watch ----------------------------------------------------------------------

    def watch(self, res: Resource, namespace: str, selector: str, resource_version: str,
              timeout_seconds: int, stop: Callable[[k8s_watch.Watch], None] | None = None
              ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from resource_version on, until the server ends the stream.

        Raises Gone on 410 (list again), ApiError on other API errors; a broken connection
        raises whatever urllib3 raises (the Watcher resumes from the last version).
        """
        watcher = k8s_watch.Watch(return_type="object")  # plain dicts, no model round-trip
        if stop is not None:
            stop(watcher)
        try:
            for event in watcher.stream(self._list_func(res), *self._list_args(res, namespace),
                                        label_selector=selector, resource_version=resource_version,
                                        allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
                                        _request_timeout=(self.timeout, timeout_seconds + 15)):
                yield str(event["type"]), event["raw_object"]
        except ApiException as exc:
            raise _error(exc, f"watch {res.plural} in {namespace}") from None

    def _list_func(self, res: Resource) -> Callable[..., Any]:
        return self.batch.list_namespaced_job if res is JOBS else self.custom.list_namespaced_custom_object

    @staticmethod
    def _list_args(res: Resource, namespace: str) -> tuple[str, ...]:
        return (namespace,) if res is JOBS else (res.group, res.version, namespace, res.plural)

    # --- pods -----------------------------------------------------------------------

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            resp = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False,
                                                 _request_timeout=self.timeout)
        except ApiException as exc:
            raise _error(exc, f"list pods in {namespace}") from None
        return list(json.loads(resp.data).get("items") or [])

    def log_tail(self, namespace: str, pod: str, container: str, lines: int = 20) -> tuple[str, ...]:
        try:
            resp = self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=lines,
                                                     _preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            raise _error(exc, f"log of pod {namespace}/{pod}") from None
        return tuple(resp.data.decode("utf-8", errors="replace").splitlines()[-lines:])


class Watcher:
    """Follows one resource in one namespace in a daemon thread; see the module docstring.

    on_snapshot(items) gets the full state after every list (first start and after 410);
    on_event(type, obj) gets each ADDED / MODIFIED / DELETED after that. Both run in the
    watcher's thread. Counters (lists, watches, resumes) are for tests and metrics.
    """

    def __init__(self, client: KubeClient, res: Resource, namespace: str, selector: str,
                 on_snapshot: Callable[[list[dict[str, Any]]], None],
                 on_event: Callable[[str, dict[str, Any]], None],
                 timeout_seconds: int = 300, max_backoff: float = 10.0) -> None:
        self.client, self.res, self.namespace, self.selector = client, res, namespace, selector
        self.on_snapshot, self.on_event = on_snapshot, on_event
        self.timeout_seconds, self.max_backoff = timeout_seconds, max_backoff
        self.synced = threading.Event()
        self.lists = self.watches = self.errors = 0
        self.resource_version = ""
        self._stopped = threading.Event()
        self._current: k8s_watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{res.plural}-{namespace}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            current = self._current
            # Watch.stop() shuts the socket down once the response exists (the blocked read
            # returns); before that (request in flight) it would be reset: try again shortly.
            if current is not None and getattr(current, "_resp", None) is not None:
                current.stop()
            self._thread.join(0.02)

    def _remember(self, watch: k8s_watch.Watch) -> None:
        self._current = watch

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if not self.resource_version:
                    items, self.resource_version = self.client.list(self.res, self.namespace, self.selector)
                    self.lists += 1
                    self.on_snapshot(items)
                    self.synced.set()
                if self._stopped.is_set():
                    return
                self.watches += 1
                for etype, obj in self.client.watch(self.res, self.namespace, self.selector, self.resource_version,
                                                    self.timeout_seconds, stop=self._remember):
                    if self._stopped.is_set():
                        return
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = str(version)
                    if etype in ("ADDED", "MODIFIED", "DELETED"):
                        self.on_event(etype, obj)
                failures = 0  # the server ended the stream normally: resume from the last version
            except Gone:
                log.info("watch %s/%s: resourceVersion %s is gone, listing again",
                         self.namespace, self.res.plural, self.resource_version)
                self.resource_version = ""
            except Exception as exc:  # noqa: BLE001 - a broken connection must never end the watcher
                if self._stopped.is_set():
                    return
                failures += 1
                self.errors += 1
                delay = min(self.max_backoff, 0.05 * 2 ** min(failures, 10))
                log.warning("watch %s/%s failed (%s: %s); resuming from %s in %.2fs", self.namespace,
                            self.res.plural, type(exc).__name__, exc, self.resource_version or "a new list", delay)
                self._stopped.wait(delay)
            finally:
                self._current = None
