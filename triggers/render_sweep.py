"""Render the trial Jobs of a sweep step on the Job launcher: one Indexed Job per sweep step.

The run's own Job runs the pipeline (`pod_entry job`) as always; when it reaches a sweep step
(triggers.sweep) it opens the step's study to the trial pods and waits for them to settle. The
trials run in a second Job, created with the first and owned by it:

    completionMode: Indexed     one trial per index, `completions` = the sweep's trials
    parallelism                 the sweep's parallelism (at most that many trials at once)
    backoffLimitPerIndex        max_failed_trials + 1: a pod that died mid-trial is run again
                                (its trial is failed and its params re-enqueued by the retry);
                                the extra one lets the last retry see the failure count pass
                                the limit and start nothing, so no index is left hanging
    command                     python -m triggers.pod_entry sweep-trial --step <step>
                                (the index is JOB_COMPLETION_INDEX, set by Kubernetes)

Trial pods start with the pipeline pod and wait for the study to open (the steps before the
sweep run first). They share the study through `LOOPLINE_SWEEP_STORAGE` (an RDB), never files.
The trial Job carries no owner label, so the run watcher never takes it for a run; its
ownerReference makes the garbage collector remove it with the run's Job (no delete verb).

Per-index retries need Kubernetes 1.29 or newer (backoffLimitPerIndex; GA in 1.33).

Pure: no I/O.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from triggers.pipeline import LaunchSpec, Step
from triggers.podspec import LABEL_OWNER, PodSettings, label_value
from triggers.render_distributed import owned_by_job
from triggers.render_job import POD_DIR, SWEEP_PODS_ENV, render_job

__all__ = ["LABEL_TRIALS_OF", "render_trial_jobs", "sweep_steps", "trial_job_name"]

LABEL_TRIALS_OF = "loopline.io/trials-of"


def sweep_steps(spec: LaunchSpec) -> list[Step]:
    return [step for step in spec.pipeline.order() if step.sweep is not None]


def trial_job_name(run_name: str, step: str) -> str:
    """<= 55 characters, so the pods' hostnames (<job>-<index>) stay DNS labels."""
    digest = hashlib.sha256(f"{run_name}\0{step}".encode()).hexdigest()[:12]
    return f"{run_name[:40].rstrip('-')}-t-{digest}"


def render_trial_jobs(spec: LaunchSpec, pod: PodSettings, owner: str,
                      run_job: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One Indexed Job per sweep step of the run; owned by `run_job` (the created Job, its uid) when given."""
    jobs = []
    for step in sweep_steps(spec):
        sweep = step.sweep or {}
        job = copy.deepcopy(render_job(spec, pod, owner))     # the same image, env, resources and volume
        meta = job["metadata"]
        meta["name"] = trial_job_name(spec.run_name, step.name)
        meta["labels"] = {k: v for k, v in meta["labels"].items() if k != LABEL_OWNER}
        meta["labels"][LABEL_TRIALS_OF] = label_value(spec.run_name)
        if run_job is not None:
            meta["ownerReferences"] = [owned_by_job(run_job)]
        template = job["spec"]["template"]
        template["metadata"]["labels"] = dict(meta["labels"])
        container = template["spec"]["containers"][0]
        container["command"] = [*container["command"][:-1], "sweep-trial", "--step", step.name]
        container["env"] = [e for e in container["env"]
                            if e["name"] not in ("LOOPLINE_TERMINATION_LOG", SWEEP_PODS_ENV)]
        container["env"].append({"name": "LOOPLINE_OUT_DIR", "value": f"{POD_DIR}/trial"})
        trials = int(sweep["trials"])
        job["spec"].pop("backoffLimit", None)          # per index instead
        job["spec"].update(completionMode="Indexed", completions=trials,
                           parallelism=min(int(sweep.get("parallelism", 1)), trials),
                           backoffLimitPerIndex=int(sweep.get("max_failed_trials", 3)) + 1)
        jobs.append(job)
    return jobs
