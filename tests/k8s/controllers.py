"""What the cluster's controllers write, played on the fake API server.

The launchers only read what the Job controller, the kubelet and Argo's workflow
controller leave behind: a run's status, its pods, their termination message and log.
These build those objects as the real controllers shape them, so the launcher tests and
the Role test (tests/k8s/lifecycle.py) move runs the same way.
"""

from __future__ import annotations

import json

from tests.k8s.conftest import NAMESPACE
from triggers.pipeline import SUCCEEDED
from triggers.render_workflow import escape_outputs

# --- batch/v1 Jobs ----------------------------------------------------------------------


def running(start="2026-01-01T10:00:00Z"):
    return {"active": 1, "ready": 1, "startTime": start}


def complete():
    return {"startTime": "2026-01-01T10:00:00Z", "completionTime": "2026-01-01T10:05:00Z", "succeeded": 1,
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                           {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T10:05:00Z"}]}


def failed(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit"):
    return {"startTime": "2026-01-01T10:00:00Z", "failed": 3,
            "conditions": [{"type": "FailureTarget", "status": "True", "reason": reason},
                           {"type": "Failed", "status": "True", "reason": reason, "message": message,
                            "lastTransitionTime": "2026-01-01T10:02:00Z"}]}


def job_pod(fake, name, report, log=""):
    """What the Job controller + kubelet leave behind: a pod with the container's termination message."""
    fake.add_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-x7k2p", "labels": {"job-name": name, "batch.kubernetes.io/job-name": name}},
        "status": {"containerStatuses": [{"name": "pipeline", "state": {"terminated": {
            "exitCode": 0 if report["phase"] == SUCCEEDED else 1, "message": json.dumps(report)}}}]},
    }, log=log)


# --- argoproj.io Workflows --------------------------------------------------------------


def node(wf, task, phase, outputs=None, message=None, kind="Pod"):
    entry = {"id": f"{wf}-{abs(hash(task)) % 10**10}", "name": f"{wf}.{task}", "displayName": task,
             "type": kind, "templateName": f"step-{task}", "phase": phase}
    if outputs is not None:
        entry["outputs"] = {"parameters": [{"name": "outputs", "value": escape_outputs(json.dumps(outputs))}]}
    if message:
        entry["message"] = message
    return entry


def wf_status(wf, phase, nodes=(), message=None):
    status = {"phase": phase, "startedAt": "2026-01-01T10:00:00Z",
              "nodes": {n["id"]: n for n in nodes}}
    if phase in ("Succeeded", "Failed", "Error"):
        status["finishedAt"] = "2026-01-01T10:10:00Z"
    if message:
        status["message"] = message
    return status


def workflow_pod(fake, wf, step_node, log=""):
    """The pod Argo ran a step in, annotated with its node id, and the log it wrote."""
    fake.add_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{wf}-step-{step_node['displayName']}-123", "labels": {"workflows.argoproj.io/workflow": wf},
        "annotations": {"workflows.argoproj.io/node-id": step_node["id"]}}}, log=log)
