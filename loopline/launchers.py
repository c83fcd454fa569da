"""The worker's cluster launchers, built from the models' `pipeline.kubernetes` blocks.

`build_launchers()` creates one Kubernetes client and the launchers the configured models use;
none when no model runs on a cluster (the local default never imports the client). The
launchers share one Lease (triggers.lease): the run watcher of one worker reports, and a
clean exit releases it so the next worker leads at once.
"""

from __future__ import annotations

import atexit
from typing import Any

from loopline.config import ConfigError
from loopline.kube_config import KubernetesConfig
from triggers.podspec import PodSettings

__all__ = ["build_launchers", "distributed_runs", "pod_settings"]


def distributed_runs(models, launcher: str) -> dict[str, Any]:
    """model -> its `pipeline.kubernetes.distributed` settings, for the models of `launcher` that
    run distributed (the local launcher runs the same ranks as processes)."""
    out = {}
    for name, m in models.items():
        cfg = m.config.pipeline.kubernetes
        if m.launcher == launcher and cfg is not None and cfg.distributed is not None:
            out[name] = cfg.distributed.settings()
    return out


def pod_settings(model, default_namespace: str, default_image: str) -> PodSettings:
    """PodSettings of a configured model; ConfigError if it has no image anywhere."""
    cfg: KubernetesConfig = model.config.pipeline.kubernetes or KubernetesConfig()
    image = cfg.image or default_image
    if not image:
        raise ConfigError(f"model {model.name}: pipeline.kubernetes.image is required for launcher "
                          f"{model.launcher} (or set LOOPLINE_JOB_IMAGE for every model)")
    return PodSettings(
        namespace=cfg.namespace or default_namespace,
        image=image,
        image_pull_policy=cfg.image_pull_policy,
        image_pull_secrets=tuple(cfg.image_pull_secrets),
        service_account=cfg.service_account,
        requests=dict(cfg.resources.requests),
        limits=dict(cfg.resources.limits),
        node_selector=dict(cfg.node_selector),
        tolerations=tuple(t.manifest() for t in cfg.tolerations),
        backoff_limit=cfg.backoff_limit,
        active_deadline_seconds=cfg.active_deadline_seconds,
        ttl_seconds_after_finished=cfg.ttl_seconds_after_finished,
        env_from_secrets=tuple(cfg.env_from_secrets),
        workdir=cfg.workdir,
        labels=dict(cfg.labels),
        annotations=dict(cfg.annotations),
    )


def build_launchers(settings, models) -> dict[str, Any]:
    """The cluster launchers the configured models use (none: no Kubernetes client is made)."""
    wanted = {kind: {name: m for name, m in models.items() if m.launcher == kind} for kind in ("kubernetes", "argo")}
    if not any(wanted.values()):
        return {}
    from triggers import kube
    from triggers.cluster import ArgoWorkflowLauncher, KubernetesJobLauncher
    from triggers.lease import Lease, lease_name

    try:
        pods = {kind: {name: pod_settings(m, settings.kube_namespace, settings.job_image)
                       for name, m in chosen.items()} for kind, chosen in wanted.items()}
    except ConfigError as exc:
        raise ConfigError(f"{settings.config}: {exc}") from None
    client = kube.connect(settings.kube_in_cluster, settings.kubeconfig, settings.kube_context)
    lease = Lease(client, settings.kube_namespace, lease_name(settings.group), duration=settings.kube_lease_seconds)
    atexit.register(lease.release)  # Faust exits normally on SIGTERM: hand over now, not after the duration
    launchers: dict[str, Any] = {}
    if pods["kubernetes"]:
        launchers["kubernetes"] = KubernetesJobLauncher(client, pods["kubernetes"], settings.group, lease=lease,
                                                        distributed=distributed_runs(models, "kubernetes"))
    if pods["argo"]:
        launchers["argo"] = ArgoWorkflowLauncher(client, pods["argo"], settings.group, lease=lease)
    return launchers
