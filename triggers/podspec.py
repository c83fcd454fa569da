"""What a cluster run needs besides the pipeline: pod settings, labels and annotations.

The Kubernetes Job and Argo Workflow renderers share this: where the pods run
(namespace, node selector, tolerations, service account), what they get (image,
resources including `nvidia.com/gpu`, secrets as `envFrom`), how long they may run,
and the metadata that lets a watcher find its runs again after a restart:

    app.kubernetes.io/managed-by=loopline   every object loopline creates
    loopline.io/owner=<worker group>        scopes the watch to this deployment
    loopline.io/model, loopline.io/request, loopline.io/correlation
                                            for `kubectl get -l ...`; label values are
                                            limited to 63 characters, so long or odd
                                            values become a readable prefix + hash

    annotations: the full model name, idempotency key and correlation id, and the
    LaunchSpec as JSON (the watcher rebuilds the request from it); the run watcher
    adds `loopline.io/reported: <time>` once the outcome is on the bus.

Pure: plain data in, plain dicts out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from triggers.pipeline import LaunchSpec

__all__ = [
    "ANN_CORRELATION",
    "ANN_IDEMPOTENCY_KEY",
    "ANN_MODEL",
    "ANN_REPORTED",
    "ANN_SPEC",
    "GPU_RESOURCE",
    "LABEL_CORRELATION",
    "LABEL_MODEL",
    "LABEL_OWNER",
    "LABEL_REQUEST",
    "MANAGED_BY",
    "MANAGED_BY_VALUE",
    "MAX_SPEC_ANNOTATION",
    "PodSettings",
    "RenderError",
    "check_images",
    "label_value",
    "object_annotations",
    "object_labels",
    "owner_selector",
    "spec_from_annotations",
]

MANAGED_BY, MANAGED_BY_VALUE = "app.kubernetes.io/managed-by", "loopline"
LABEL_OWNER = "loopline.io/owner"
LABEL_MODEL = "loopline.io/model"
LABEL_REQUEST = "loopline.io/request"
LABEL_CORRELATION = "loopline.io/correlation"
ANN_MODEL = "loopline.io/model"
ANN_IDEMPOTENCY_KEY = "loopline.io/idempotency-key"
ANN_CORRELATION = "loopline.io/correlation-id"
ANN_SPEC = "loopline.io/launch-spec"
ANN_REPORTED = "loopline.io/reported"  # the acknowledgement: never reported again
GPU_RESOURCE = "nvidia.com/gpu"
# The API server rejects objects whose annotations exceed 256 KiB in total.
MAX_SPEC_ANNOTATION = 200 * 1024

_LABEL_VALUE_RE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


class RenderError(ValueError):
    """A run that cannot be expressed as a Kubernetes object (the message says why)."""


@dataclass(frozen=True)
class PodSettings:
    """Per-model cluster settings (loopline.yaml `pipeline.kubernetes`), already validated."""

    namespace: str = "default"
    image: str = ""
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()  # already in Kubernetes form (camelCase)
    backoff_limit: int = 0
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = 86400
    env_from_secrets: tuple[str, ...] = ()
    workdir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def resources(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = {k: str(v) for k, v in sorted(self.requests.items())}
        if self.limits:
            out["limits"] = {k: str(v) for k, v in sorted(self.limits.items())}
        return out

    def pod_scheduling(self) -> dict[str, Any]:
        """The pod-level fields both renderers set the same way (camelCase, empty ones left out)."""
        out: dict[str, Any] = {}
        if self.service_account:
            out["serviceAccountName"] = self.service_account
        if self.node_selector:
            out["nodeSelector"] = dict(sorted(self.node_selector.items()))
        if self.tolerations:
            out["tolerations"] = [dict(t) for t in self.tolerations]
        if self.image_pull_secrets:
            out["imagePullSecrets"] = [{"name": name} for name in self.image_pull_secrets]
        return out

    def container_settings(self) -> dict[str, Any]:
        """The container-level fields both renderers set the same way (camelCase, empty ones left out)."""
        out: dict[str, Any] = {}
        if self.image_pull_policy:
            out["imagePullPolicy"] = self.image_pull_policy
        if self.workdir:
            out["workingDir"] = self.workdir
        if self.env_from_secrets:
            out["envFrom"] = [{"secretRef": {"name": name}} for name in self.env_from_secrets]
        resources = self.resources()
        if resources:
            out["resources"] = resources
        return out


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a readable prefix plus 16 hex of its sha256."""
    if len(text) <= 63 and _LABEL_VALUE_RE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:46].strip("-_.")
    return f"{prefix}-{digest}" if prefix else digest


def owner_selector(owner: str) -> str:
    """Label selector for every object this deployment (owner = worker group) created."""
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_OWNER}={label_value(owner)}"


def object_labels(spec: LaunchSpec, pod: PodSettings, owner: str) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in pod.labels.items()}
    labels.update({
        MANAGED_BY: MANAGED_BY_VALUE,
        LABEL_OWNER: label_value(owner),
        LABEL_MODEL: label_value(spec.model),
        LABEL_REQUEST: label_value(spec.env.get("LOOPLINE_IDEMPOTENCY_KEY", spec.run_name)),
    })
    correlation = spec.env.get("LOOPLINE_CORRELATION_ID")
    if correlation:
        labels[LABEL_CORRELATION] = label_value(correlation)
    return labels


def object_annotations(spec: LaunchSpec, pod: PodSettings) -> dict[str, str]:
    annotations = {str(k): str(v) for k, v in pod.annotations.items()}
    annotations[ANN_MODEL] = spec.model
    for name, env in ((ANN_IDEMPOTENCY_KEY, "LOOPLINE_IDEMPOTENCY_KEY"), (ANN_CORRELATION, "LOOPLINE_CORRELATION_ID")):
        if spec.env.get(env):
            annotations[name] = spec.env[env]
    encoded = json.dumps(spec.to_dict(), separators=(",", ":"), sort_keys=True)
    if len(encoded.encode()) > MAX_SPEC_ANNOTATION:
        raise RenderError(
            f"run {spec.run_name}: the launch spec is {len(encoded.encode())} bytes, more than the "
            f"{MAX_SPEC_ANNOTATION} a Kubernetes annotation can carry (is the request event that large?)"
        )
    annotations[ANN_SPEC] = encoded
    return annotations


def spec_from_annotations(annotations: Mapping[str, str] | None) -> LaunchSpec | None:
    raw = (annotations or {}).get(ANN_SPEC)
    if not raw:
        return None
    try:
        return LaunchSpec.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None


def check_images(spec_or_pipeline_steps: Any, pod: PodSettings, launcher: str) -> None:
    """A Job runs every step in one container: a step image other than the pod's cannot work."""
    for step in spec_or_pipeline_steps:
        if step.image and step.image != pod.image:
            raise RenderError(
                f"step {step.name!r} sets image {step.image!r}, but the {launcher} launcher runs every "
                f"step in one pod with the model's image {pod.image!r}; use launcher: argo for per-step images"
            )
