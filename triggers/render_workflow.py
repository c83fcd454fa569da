"""Render a run as an Argo Workflow (argoproj.io/v1alpha1), and read its status back.

The pipeline maps onto a DAG template, one task per step, each task its own pod
(`python -m triggers.pod_entry step`) with the step's image or the model's:

- `depends` becomes `"a.Succeeded && b.Succeeded"`: a task runs only when every
  dependency succeeded, so the downstream of a skipped step is skipped too
  (Argo's bare `a` would also accept a Skipped `a`; the local runner does not).
- Outputs: every step writes a JSON object (`$LOOPLINE_OUTPUTS`); its wrapper saves
  it as the output parameter `outputs`, and every task receives the `outputs` of all
  its upstream steps as input parameters (`{{tasks.S.outputs.parameters.outputs}}`).
  The wrapper fills `{{steps.S.outputs.N}}` placeholders from those with the same
  code as the local runner, and sets `LOOPLINE_INPUTS` the same way.
- `when: "S.x >= 0.9"` (our syntax) becomes
  `when: "{{tasks.S.outputs.parameters.when-T}} == true"`: the wrapper of step S
  evaluates T's condition on S's outputs with `triggers.conditions` and writes the
  answer as output parameter `when-T`. Argo still decides whether T runs, but the
  comparison has exactly the local semantics (a missing output or a type mismatch is
  false, never an error; no quoting of string outputs into govaluate).
- Step timeouts become the template's activeDeadlineSeconds; backoff_limit becomes a
  retryStrategy; the run's deadline and TTL become the Workflow's.
- A sweep step S (triggers.sweep) becomes three tasks: `S-sweep-open` (stores the upstream
  outputs on the study), `S-sweep-trials` (a DAG of its own: `withSequence` over the trials,
  one pod each, `parallelism` of the sweep; a trial pod that dies is retried up to
  max_failed_trials + 1 times), then `S` itself, which closes the sweep and writes the best
  trial's outputs, so downstream tasks and conditions read `S` as for any step. The trials task
  continues on failure: the close decides, with the sweep's own max_failed_trials.

No request data ever appears where Argo's template engine would read it: Argo
substitutes `{{...}}` anywhere in a template, so the pipeline (which has our
placeholders) travels base64-encoded (`LOOPLINE_PIPELINE_B64`), and every request
variable whose value contains `{{` travels in `LOOPLINE_ENV_B64` (a JSON object,
base64) instead of as a plain env entry. Commands are argv lists, never a shell.
The kubelet expands `$(VAR)` in env values and args: env values are escaped
(`$` -> `$$`), and so is the `outputs` parameter a step writes, because Argo pastes
it into the args of the tasks downstream (readers undo it: `unescape_outputs`).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from triggers import conditions
from triggers.pipeline import FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, LaunchSpec, RunStatus, Step
from triggers.podspec import PodSettings, object_annotations, object_labels
from triggers.render_job import kubelet_escape, parse_time

__all__ = [
    "ENTRYPOINT",
    "OUT_DIR",
    "decision_param",
    "escape_outputs",
    "unescape_outputs",
    "render_workflow",
    "safe_for_argo",
    "step_template_name",
    "workflow_status",
]

ENTRYPOINT = "pipeline"
OUT_DIR = "/tmp/loopline"  # where the wrapper writes output parameters (container filesystem)
STATE_DIR = "/tmp/loopline/state"
ENTRY = ("python", "-m", "triggers.pod_entry")
_NODE_PHASES = {"Pending": PENDING, "Running": RUNNING, "Succeeded": SUCCEEDED, "Failed": FAILED,
                "Error": FAILED, "Skipped": SKIPPED, "Omitted": SKIPPED}


def safe_for_argo(value: str) -> bool:
    """False if Argo's template engine would read something in it (it looks for `{{`)."""
    return "{{" not in value


def step_template_name(step: str) -> str:
    return f"step-{step}"


def decision_param(task: str) -> str:
    """Output parameter of a condition's step that says whether `task` runs."""
    return f"when-{task}"


def _b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data, separators=(",", ":"), sort_keys=True).encode()).decode()


def render_workflow(spec: LaunchSpec, pod: PodSettings, owner: str) -> dict[str, Any]:
    pipeline = spec.pipeline
    order = pipeline.order()
    labels = object_labels(spec, pod, owner)
    plain = {k: v for k, v in spec.env.items() if safe_for_argo(v)}
    encoded = {k: v for k, v in spec.env.items() if not safe_for_argo(v)}
    base_env = {**plain, "LOOPLINE_RUN_NAME": spec.run_name, "LOOPLINE_MODEL": spec.model,
                "LOOPLINE_PIPELINE_B64": _b64(pipeline.to_dict()), "LOOPLINE_STATE_DIR": STATE_DIR,
                "LOOPLINE_OUT_DIR": OUT_DIR, "PYTHONUNBUFFERED": "1"}
    encoded = {k: v for k, v in encoded.items() if k not in base_env}  # ours win, as for a Job
    if encoded:
        base_env["LOOPLINE_ENV_B64"] = _b64(encoded)
    # Which step decides each conditional task.
    deciders: dict[str, list[str]] = {}
    for step in order:
        if step.when is not None:
            deciders.setdefault(conditions.parse(step.when).step, []).append(step.name)

    tasks: list[dict[str, Any]] = []
    templates: list[dict[str, Any]] = []
    for step in order:
        upstream = pipeline.upstream(step.name)
        if step.sweep is None:
            tasks.append(_task(step, upstream))
            templates.append(_step_template(step, upstream, deciders.get(step.name, []), pod, base_env))
        else:
            tasks += _sweep_tasks(step, upstream)
            templates += _sweep_templates(step, upstream, deciders.get(step.name, []), pod, base_env)
    templates.insert(0, {"name": ENTRYPOINT, "dag": {"tasks": tasks}})
    wf_spec: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        **pod.pod_scheduling(),
        "podMetadata": {"labels": labels},
        "podGC": {"strategy": "OnPodSuccess"},  # keep failed pods for their logs until the TTL
        "templates": templates,
    }
    if pod.active_deadline_seconds is not None:
        wf_spec["activeDeadlineSeconds"] = pod.active_deadline_seconds
    if pod.ttl_seconds_after_finished is not None:
        wf_spec["ttlStrategy"] = {"secondsAfterCompletion": pod.ttl_seconds_after_finished}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": spec.run_name,
            "namespace": pod.namespace,
            "labels": labels,
            "annotations": object_annotations(spec, pod),
        },
        "spec": wf_spec,
    }


def _task(step: Step, upstream: frozenset[str]) -> dict[str, Any]:
    task: dict[str, Any] = {"name": step.name, "template": step_template_name(step.name)}
    if step.depends:
        task["depends"] = " && ".join(f"{dep}.Succeeded" for dep in step.depends)
    if step.when is not None:
        decider = conditions.parse(step.when).step
        task["when"] = f"{{{{tasks.{decider}.outputs.parameters.{decision_param(step.name)}}}}} == true"
    if upstream:
        task["arguments"] = {"parameters": [
            {"name": f"outputs-{name}", "value": f"{{{{tasks.{name}.outputs.parameters.outputs}}}}"}
            for name in sorted(upstream)
        ]}
    return task


def _step_template(step: Step, upstream: frozenset[str], decides: list[str], pod: PodSettings,
                   base_env: Mapping[str, str], mode: str = "step") -> dict[str, Any]:
    args = [mode, "--step", step.name]
    if mode == "step":
        args += _input_args(upstream)
    template: dict[str, Any] = {
        "name": step_template_name(step.name),
        "container": _container(step, pod, base_env, args),
        "outputs": {"parameters": [
            {"name": "outputs", "valueFrom": {"path": f"{OUT_DIR}/outputs.json"}},
            *({"name": decision_param(task), "valueFrom": {"path": f"{OUT_DIR}/{decision_param(task)}"}}
              for task in decides),
        ]},
    }
    if upstream and mode == "step":
        template["inputs"] = _input_params(upstream)
    if step.timeout_seconds is not None and mode == "step":
        template["activeDeadlineSeconds"] = int(math.ceil(step.timeout_seconds))
    if pod.backoff_limit:
        template["retryStrategy"] = {"limit": pod.backoff_limit, "retryPolicy": "OnFailure"}
    return template


def _container(step: Step, pod: PodSettings, base_env: Mapping[str, str], args: list[str]) -> dict[str, Any]:
    return {
        "image": step.image or pod.image,
        "command": [*ENTRY],
        "args": args,
        "env": [{"name": k, "value": kubelet_escape(v)} for k, v in sorted(base_env.items())],
        "securityContext": {"allowPrivilegeEscalation": False},
        **pod.container_settings(),
    }


def _input_args(upstream: frozenset[str]) -> list[str]:
    args: list[str] = []
    for name in sorted(upstream):
        args += ["--input", f"{name}={{{{inputs.parameters.outputs-{name}}}}}"]
    return args


def _input_params(upstream: frozenset[str]) -> dict[str, Any]:
    return {"parameters": [{"name": f"outputs-{name}"} for name in sorted(upstream)]}


# --- a sweep step: open, the trials' fan-out, close (see the module docstring) --------------

SWEEP_TEMPLATE_PREFIX = "sweep-"


def sweep_task_names(step: str) -> tuple[str, str]:
    return f"{step}-sweep-open", f"{step}-sweep-trials"


def _sweep_tasks(step: Step, upstream: frozenset[str]) -> list[dict[str, Any]]:
    opening, trials = sweep_task_names(step.name)
    first = _task(step, upstream)                # the step's own depends, when and inputs
    first.update(name=opening, template=f"{SWEEP_TEMPLATE_PREFIX}open-{step.name}")
    fan_out = {"name": trials, "template": f"{SWEEP_TEMPLATE_PREFIX}trials-{step.name}",
               "depends": f"{opening}.Succeeded", "continueOn": {"failed": True}}
    close = {"name": step.name, "template": step_template_name(step.name),
             "depends": f"({trials}.Succeeded || {trials}.Failed)"}
    return [first, fan_out, close]


def _sweep_templates(step: Step, upstream: frozenset[str], decides: list[str], pod: PodSettings,
                     base_env: Mapping[str, str]) -> list[dict[str, Any]]:
    sweep = step.sweep or {}
    trials = int(sweep["trials"])
    opening: dict[str, Any] = {
        "name": f"{SWEEP_TEMPLATE_PREFIX}open-{step.name}",
        "container": _container(step, pod, base_env, ["sweep-open", "--step", step.name, *_input_args(upstream)]),
    }
    if upstream:
        opening["inputs"] = _input_params(upstream)
    fan_out = {
        "name": f"{SWEEP_TEMPLATE_PREFIX}trials-{step.name}",
        "parallelism": min(int(sweep.get("parallelism", 1)), trials),
        "dag": {"tasks": [{
            "name": "trial", "template": f"{SWEEP_TEMPLATE_PREFIX}trial-{step.name}",
            "withSequence": {"count": str(trials)},
            "arguments": {"parameters": [{"name": "index", "value": "{{item}}"}]},
        }]},
    }
    trial = {
        "name": f"{SWEEP_TEMPLATE_PREFIX}trial-{step.name}",
        "inputs": {"parameters": [{"name": "index"}]},
        "container": _container(step, pod, base_env,
                                ["sweep-trial", "--step", step.name, "--index", "{{inputs.parameters.index}}"]),
        # a pod that died mid-trial: its retry fails the trial and runs its params again
        "retryStrategy": {"limit": int(sweep.get("max_failed_trials", 3)) + 1, "retryPolicy": "OnFailure"},
    }
    # (the step's timeout_seconds bounds each trial inside the pod: a trial past it FAILs, not retried)
    return [opening, fan_out, trial, _step_template(step, upstream, decides, pod, base_env, mode="sweep-close")]


# --- reading status back -----------------------------------------------------------


def workflow_status(wf: Mapping[str, Any], log_tail: Sequence[str] = ()) -> RunStatus:
    meta = wf.get("metadata") or {}
    status = wf.get("status") or {}
    raw_phase = status.get("phase") or "Pending"
    phase = {"Succeeded": SUCCEEDED, "Failed": FAILED, "Error": FAILED, "Running": RUNNING}.get(raw_phase, PENDING)
    names = _step_names(wf)
    steps = {name: PENDING for name in names}
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for node in failed_first(step_nodes(wf, names)):
        name = node["displayName"]
        steps[name] = _NODE_PHASES.get(node.get("phase"), PENDING)
        for param in (node.get("outputs") or {}).get("parameters") or []:
            if param.get("name") == "outputs":
                try:
                    value = json.loads(unescape_outputs(param.get("value") or "{}"))
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    outputs[name] = value
        if steps[name] == FAILED and node.get("message"):
            failures.append(f"step {name}: {node['message']}")
    if phase == SUCCEEDED:
        # Omitted/Skipped tasks never got a node before some Argo versions: no run, no Pending.
        steps = {k: (SKIPPED if v == PENDING else v) for k, v in steps.items()}
    reason = None
    if phase == FAILED:
        parts = [status.get("message")] if status.get("message") else []
        parts += [f for f in failures if f not in parts]
        text = "; ".join(parts) or raw_phase
        reason = f"DeadlineExceeded: {text}" if "deadline" in text.lower() else f"Workflow{raw_phase}: {text}"
    return RunStatus(
        run_name=str(meta.get("name", "")),
        model=str((meta.get("annotations") or {}).get("loopline.io/model", "")),
        phase=phase,
        outputs=outputs,
        steps=steps,
        reason=reason,
        log_tail=tuple(log_tail) if phase == FAILED else (),
        started_at=parse_time(status.get("startedAt")),
        finished_at=parse_time(status.get("finishedAt")) if phase in (SUCCEEDED, FAILED) else None,
    )


def escape_outputs(text: str) -> str:
    """The `outputs` parameter as written: JSON with `$` doubled (see the module docstring)."""
    return text.replace("$", "$$")


def unescape_outputs(text: str) -> str:
    return text.replace("$$", "$")


def step_nodes(wf: Mapping[str, Any], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The node of each task (a Retry node when there is a retryStrategy, else the Pod node)."""
    names = set(names if names is not None else _step_names(wf))
    nodes = ((wf.get("status") or {}).get("nodes") or {}).values()
    chosen: dict[str, dict[str, Any]] = {}
    for node in nodes:
        name = node.get("displayName")
        if name not in names:
            continue
        # Prefer the task's own node (Retry/Pod/Skipped) over nothing; the Retry parent wins over a Pod.
        if name not in chosen or node.get("type") == "Retry":
            chosen[name] = node
    return list(chosen.values())


def failed_first(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(nodes, key=lambda n: (n.get("phase") not in ("Failed", "Error"), n.get("displayName", "")))


def failed_pod_node(wf: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first failed Pod node: its pod's log tail explains the failure."""
    nodes = ((wf.get("status") or {}).get("nodes") or {}).values()
    failed = [n for n in nodes if n.get("type") == "Pod" and n.get("phase") in ("Failed", "Error")]
    return min(failed, key=lambda n: n.get("finishedAt") or "", default=None)


def _step_names(wf: Mapping[str, Any]) -> list[str]:
    """The pipeline's steps: the entry DAG's tasks but a sweep's open and trials tasks."""
    for template in (wf.get("spec") or {}).get("templates") or []:
        if template.get("name") == ENTRYPOINT and "dag" in template:
            return [str(task["name"]) for task in template["dag"].get("tasks") or []
                    if not str(task.get("template", "")).startswith(SWEEP_TEMPLATE_PREFIX)]
    return []
