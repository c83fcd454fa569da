"""The `pipeline.kubernetes` block of loopline.yaml: where and how a model's pods run.

A model picks its launcher in loopline.yaml (`pipeline.launcher: local | kubernetes | argo`);
for the cluster ones, `pipeline.kubernetes` says where and how its pods run (validated here,
with errors that name the key). How the worker reaches the API server (in-cluster service
account or a kubeconfig and context) is deployment configuration: LOOPLINE_KUBE_* settings.
`loopline.launchers` turns it into the launchers' PodSettings.

    pipeline:
      launcher: kubernetes            # or argo
      kubernetes:
        namespace: ml-training        # default: LOOPLINE_KUBE_NAMESPACE
        image: ghcr.io/acme/loopline:1.4   # default: LOOPLINE_JOB_IMAGE
        service_account: trainer
        resources: {requests: {cpu: "2", memory: 8Gi}, limits: {memory: 8Gi}, gpu: 1}
        node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
        tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        backoff_limit: 1
        active_deadline_seconds: 7200
        ttl_seconds_after_finished: 86400
        env_from_secrets: [mlflow-credentials]
        distributed:                  # optional: one run = N pods with the torchrun contract
          workers: 4                  # N >= 2 ranks (pods; locally: processes)
          gpus_per_worker: 1          # nvidia.com/gpu limits of each pod (0: what resources say)
          port: 29500                 # MASTER_PORT
          mode: indexed               # indexed (Indexed Job + headless Service) | pytorchjob
                                      # (Kubeflow Training Operator v1 PyTorchJob)

`distributed` also applies to launcher local: each step runs as N local processes with the same
contract (MASTER_ADDR=127.0.0.1, a free MASTER_PORT). Argo runs no distributed steps (yet).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triggers.podspec import ANN_REPORTED, GPU_RESOURCE
from triggers.render_distributed import Distributed

__all__ = ["DistributedConfig", "KubernetesConfig", "pipeline_problems"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# apimachinery's resource.Quantity format (e.g. 500m, 2, 1.5, 8Gi, 1e3)
_QUANTITY = re.compile(r"^[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _quantities(value: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, quantity in value.items():
        text = str(quantity) if not isinstance(quantity, bool) else ""
        if not _QUANTITY.match(text):
            raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 500m, 2, 8Gi)")
        out[name] = text
    return out


class ResourcesConfig(_Strict):
    requests: dict[str, str | int | float] = {}
    limits: dict[str, str | int | float] = {}
    gpu: int = Field(0, ge=0)                 # shorthand: nvidia.com/gpu in requests and limits

    @field_validator("requests", "limits")
    @classmethod
    def _check(cls, value: dict[str, Any]) -> dict[str, str]:
        return _quantities(value)

    @model_validator(mode="after")
    def _gpu(self) -> ResourcesConfig:
        if self.gpu:
            for side in (self.requests, self.limits):
                if side.get(GPU_RESOURCE, str(self.gpu)) != str(self.gpu):
                    raise ValueError(f"gpu: {self.gpu} disagrees with {GPU_RESOURCE} {side[GPU_RESOURCE]!r}")
                side[GPU_RESOURCE] = str(self.gpu)
        requested, limited = self.requests.get(GPU_RESOURCE), self.limits.get(GPU_RESOURCE)
        if requested is not None and requested != limited:
            raise ValueError(f"{GPU_RESOURCE} must be set in limits, equal to requests "
                             f"(Kubernetes does not overcommit GPUs; or use gpu: N)")
        return self


class TolerationConfig(_Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _shape(self) -> TolerationConfig:
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds only applies to effect NoExecute")
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, key in (("key", "key"), ("value", "value"), ("effect", "effect"),
                          ("toleration_seconds", "tolerationSeconds")):
            value = getattr(self, name)
            if value is not None:
                out[key] = value
        return out


class DistributedConfig(_Strict):
    workers: int = Field(ge=2)                 # a "distributed" run of one rank is a plain run
    gpus_per_worker: int = Field(0, ge=0)
    port: int = Field(29500, ge=1024, le=65535)   # unprivileged: the pods run without root rights to bind
    mode: Literal["indexed", "pytorchjob"] = "indexed"

    def settings(self) -> Distributed:
        return Distributed(workers=self.workers, gpus_per_worker=self.gpus_per_worker, port=self.port,
                           mode=self.mode)


class KubernetesConfig(_Strict):
    namespace: str | None = None
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    image_pull_secrets: list[str] = []
    service_account: str | None = None
    resources: ResourcesConfig = ResourcesConfig()
    node_selector: dict[str, str] = {}
    tolerations: list[TolerationConfig] = []
    backoff_limit: int = Field(0, ge=0)        # retries of a failed pod (Job) / step (Argo)
    active_deadline_seconds: int | None = Field(None, gt=0)
    # A reported run stays this long (kubectl logs), then its controller removes it; a run that
    # finishes while no worker watches is lost after it: keep it above the longest downtime.
    ttl_seconds_after_finished: int | None = Field(86400, ge=0)
    env_from_secrets: list[str] = []           # e.g. MLflow credentials, as envFrom secretRef
    workdir: str | None = None                 # container workingDir (default: the image's)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    distributed: DistributedConfig | None = None

    @field_validator("namespace", "service_account")
    @classmethod
    def _dns(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS-1123 label (lowercase letters, digits, '-'; at most 63)")
        return value

    @field_validator("annotations")
    @classmethod
    def _not_acknowledged(cls, value: dict[str, str]) -> dict[str, str]:
        if ANN_REPORTED in value:
            raise ValueError(f"{ANN_REPORTED} marks a run as reported: a run created with it would never be")
        return value

    @model_validator(mode="after")
    def _gpus_agree(self) -> KubernetesConfig:
        gpus = self.distributed.gpus_per_worker if self.distributed is not None else 0
        declared = self.resources.limits.get(GPU_RESOURCE)
        if gpus and declared is not None and declared != str(gpus):
            raise ValueError(f"distributed.gpus_per_worker: {gpus} disagrees with resources {GPU_RESOURCE} "
                             f"{declared!r} (set one of them)")
        return self


def pipeline_problems(pipeline) -> list[tuple[str, str]]:
    """(key, problem) pairs of a PipelineConfig that only a cluster launcher has."""
    cfg = pipeline.kubernetes
    if pipeline.launcher == "argo" and cfg is not None and cfg.distributed is not None:
        return [("kubernetes.distributed", "the argo launcher runs no distributed steps; "
                                           "use launcher: kubernetes (or local)")]
    if pipeline.launcher != "kubernetes":
        return []
    image = cfg.image if cfg is not None else None
    return [(f"steps[{i}].image",
             f"{step.image!r}: the kubernetes launcher runs every step in one pod with "
             f"pipeline.kubernetes.image ({image!r}); per-step images need launcher: argo")
            for i, step in enumerate(pipeline.steps) if step.image and step.image != image]
