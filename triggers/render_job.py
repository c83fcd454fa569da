"""Render a run as a Kubernetes batch/v1 Job, and read a Job's status back as a RunStatus.

Mapping (chosen for honesty over cleverness): one Job per run, one pod, one container
(`python -m triggers.pod_entry job`) that runs the pipeline's steps in order with the
same runner the local launcher uses (`triggers.local_runner`): the same `when`
semantics, placeholders, step timeouts and outputs everywhere. Per-step images
therefore need the Argo launcher (checked at config load).

The request travels as environment variables, never through a shell: every
`LaunchSpec.env` item is its own `env` entry, the pipeline is JSON in
`LOOPLINE_PIPELINE`, and the command is an argv list. Values are escaped for the
kubelet's own `$(VAR)` expansion (`$` -> `$$`), so the process sees them verbatim.

The pod reports back through its termination message (`/dev/termination-log`,
at most 4 KiB): a JSON object with the run's phase, reason, step phases and
outputs, read by the watcher from the pod's container status. The Job's own
conditions give the Kubernetes side of a failure (BackoffLimitExceeded,
DeadlineExceeded, ...).

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from triggers.pipeline import FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, LaunchSpec, RunStatus
from triggers.podspec import PodSettings, check_images, object_annotations, object_labels

__all__ = [
    "CONTAINER",
    "POD_DIR",
    "SWEEP_PODS_ENV",
    "job_phase",
    "job_status",
    "kubelet_escape",
    "parse_report",
    "parse_time",
    "pod_env",
    "render_job",
]

CONTAINER = "pipeline"
POD_DIR = "/var/run/loopline"  # an emptyDir: run dir, state dir, step logs and outputs
TERMINATION_LOG = "/dev/termination-log"
SWEEP_PODS_ENV = "LOOPLINE_SWEEP_TRIALS"  # "pods": a sweep step's trials are the trial Job's (render_sweep)
ENTRY = ("python", "-m", "triggers.pod_entry")


def kubelet_escape(value: str) -> str:
    """Make a value survive the kubelet's `$(VAR)` expansion of env values, command and args.

    The kubelet expands `$(NAME)` to the container's variable NAME and turns `$$` into `$`;
    doubling every `$` makes it hand the container exactly the original text.
    """
    return value.replace("$", "$$")


def pod_env(spec: LaunchSpec, extra: Mapping[str, str]) -> list[dict[str, str]]:
    """`env` entries: the request's variables, then ours; one entry per name, values literal."""
    env = dict(spec.env)
    env.update(extra)
    return [{"name": name, "value": kubelet_escape(value)} for name, value in sorted(env.items())]


def render_job(spec: LaunchSpec, pod: PodSettings, owner: str) -> dict[str, Any]:
    """The Job manifest for one run (name = run name: a second create gets 409)."""
    check_images(spec.pipeline.steps, pod, "kubernetes")
    labels = object_labels(spec, pod, owner)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pod.image,
        "command": [*ENTRY, "job"],
        "env": pod_env(spec, {
            "LOOPLINE_RUN_NAME": spec.run_name,
            "LOOPLINE_MODEL": spec.model,
            "LOOPLINE_PIPELINE": json.dumps(spec.pipeline.to_dict(), separators=(",", ":")),
            "LOOPLINE_RUN_ROOT": f"{POD_DIR}/runs",
            "LOOPLINE_STATE_DIR": f"{POD_DIR}/state",
            "LOOPLINE_TERMINATION_LOG": TERMINATION_LOG,
            "PYTHONUNBUFFERED": "1",
            **({SWEEP_PODS_ENV: "pods"} if any(s.sweep is not None for s in spec.pipeline.steps) else {}),
        }),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "loopline", "mountPath": POD_DIR}],
        "securityContext": {"allowPrivilegeEscalation": False},
        **pod.container_settings(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the Job controller retries (backoffLimit), not the kubelet
        "automountServiceAccountToken": False,  # training code has no business with the API
        **pod.pod_scheduling(),
        "containers": [container],
        "volumes": [{"name": "loopline", "emptyDir": {}}],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": pod.backoff_limit,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if pod.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = pod.active_deadline_seconds
    if pod.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = pod.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.run_name,
            "namespace": pod.namespace,
            "labels": labels,
            "annotations": object_annotations(spec, pod),
        },
        "spec": job_spec,
    }


# --- reading status back -----------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """RFC 3339 timestamp from the API ('2024-01-02T03:04:05Z') -> epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def job_phase(job: Mapping[str, Any]) -> tuple[str, str | None, float | None]:
    """(phase, Kubernetes reason or None, finished at) from the Job's conditions and counters."""
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    for cond in conditions:
        if cond.get("type") == "Complete":
            return SUCCEEDED, None, parse_time(status.get("completionTime")) or parse_time(cond.get("lastTransitionTime"))
    for cond in conditions:
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            message = cond.get("message")
            return FAILED, f"{reason}: {message}" if message else reason, parse_time(cond.get("lastTransitionTime"))
    # FailureTarget / SuccessCriteriaMet (1.31+) come before the final condition: still running.
    if status.get("active") or status.get("ready") or status.get("startTime"):
        return RUNNING, None, None
    return PENDING, None, None


def parse_report(message: Any) -> Mapping[str, Any] | None:
    """The JSON object pod_entry writes as termination message, or None (logs, garbage)."""
    if not isinstance(message, str):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "phase" in data else None


def job_status(job: Mapping[str, Any], report: Mapping[str, Any] | None = None,
               log_tail: Sequence[str] = (), model: str = "") -> RunStatus:
    """RunStatus of a Job, with the pod's report (termination message) when there is one."""
    meta = job.get("metadata") or {}
    phase, k8s_reason, finished = job_phase(job)
    steps = _step_names(job)
    report = report or {}
    step_phases = {name: PENDING for name in steps}
    reported_steps = report.get("steps")
    if isinstance(reported_steps, Mapping):
        step_phases.update({str(k): str(v) for k, v in reported_steps.items()})
    if phase == SUCCEEDED:
        step_phases = {k: (v if v in (SUCCEEDED, SKIPPED) else SUCCEEDED) for k, v in step_phases.items()}
    reason = None
    if phase == FAILED:
        step_reason = report.get("reason") if report.get("phase") == FAILED else None
        parts = [p for p in (k8s_reason, step_reason) if p]
        reason = ": ".join(parts) if parts else "Failed"
    outputs = report.get("outputs") if isinstance(report.get("outputs"), Mapping) else {}
    status = job.get("status") or {}
    return RunStatus(
        run_name=str(meta.get("name", "")),
        model=model or str((meta.get("annotations") or {}).get("loopline.io/model", "")),
        phase=phase,
        outputs={str(k): dict(v) for k, v in outputs.items() if isinstance(v, Mapping)},
        steps=step_phases,
        reason=reason,
        log_tail=tuple(log_tail) if phase == FAILED else (),
        started_at=parse_time(status.get("startTime")),
        finished_at=finished,
    )


def _step_names(job: Mapping[str, Any]) -> list[str]:
    """Step names from the pipeline the Job carries (for step phases before any report)."""
    try:
        containers = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in containers[0].get("env") or []}
        pipeline = json.loads(env.get("LOOPLINE_PIPELINE") or "{}")
        return [str(step["name"]) for step in pipeline.get("steps") or []]
    except (KeyError, IndexError, TypeError, ValueError):
        return []
