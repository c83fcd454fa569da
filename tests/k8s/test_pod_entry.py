"""Event fields full of shell metacharacters reach the step processes verbatim.

The rendered manifests are "run" here the way the cluster would run them, without a cluster:
the container's command and env are taken from the rendered Job / Workflow, the kubelet's
`$(VAR)` expansion is applied to env values and args exactly as Kubernetes does it
(a port of k8s.io/kubernetes third_party/forked/golang/expansion), and for Argo the DAG is
walked with Argo's parameter substitution, `depends` and `when`. The processes are real:
`python -m triggers.pod_entry ...` and the steps it starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.conftest import NASTY, OWNER, launch_spec
from triggers.pipeline import Pipeline, Step
from triggers.podspec import PodSettings
from triggers.render_job import render_job
from triggers.render_workflow import OUT_DIR, render_workflow

REPO = Path(__file__).resolve().parents[2]
SETTINGS = PodSettings(namespace="default", image="loopline:dev")
PWNED = Path("/tmp/pwned")
ECHO = ("import json,os,sys; json.dump({'text': os.environ['LOOPLINE_PARAM_REASON'], "
        "'request': json.loads(os.environ['LOOPLINE_REQUEST'])['data']['reason'], 'argv': sys.argv[1:]}, "
        "open(os.environ['LOOPLINE_OUTPUTS'], 'w'))")
USE = ("import json,os,sys; json.dump({'argv1': sys.argv[1], 'inputs': json.loads(os.environ['LOOPLINE_INPUTS'])}, "
       "open(os.environ['LOOPLINE_OUTPUTS'], 'w'))")


def kubelet_expand(text: str, defined: dict[str, str]) -> str:
    """Kubernetes' expansion of `$(VAR)` in env values, command and args."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(defined.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_kubelet_expansion_port_behaves_like_kubernetes():
    defined = {"A": "x"}
    assert kubelet_expand("$(A)-$$(A)-$(B)-$$-$a-$(", defined) == "x-$(A)-$(B)-$-$a-$("


def container_env(container: dict, overrides: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container["env"]:
        env[item["name"]] = kubelet_expand(item["value"], env)
    env.update(overrides)
    env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=str(REPO), HOME=os.environ.get("HOME", "/root"))
    return env


def pipeline() -> Pipeline:
    return Pipeline((
        Step("echo", ("python", "-c", ECHO, "literal arg; $(whoami) `id`")),
        Step("use", ("python", "-c", USE, "{{steps.echo.outputs.text}}"), depends=("echo",)),
        Step("gate", ("python", "-c", "raise SystemExit(9)"), depends=("use",), when="echo.text == 'nope'"),
        Step("after-gate", ("python", "-c", "raise SystemExit(9)"), depends=("gate",)),
        Step("yes", ("python", "-c", "pass"), depends=("use",), when="use.argv1 != null"),
    ))


@pytest.fixture(autouse=True)
def no_pwned():
    PWNED.unlink(missing_ok=True)
    yield
    assert not PWNED.exists(), "a shell ran something from an event field"


def test_job_pod_passes_event_fields_verbatim(tmp_path):
    spec = launch_spec(reason=NASTY, steps=pipeline())
    container = render_job(spec, SETTINGS, OWNER)["spec"]["template"]["spec"]["containers"][0]
    termination = tmp_path / "termination-log"
    env = container_env(container, {"LOOPLINE_RUN_ROOT": str(tmp_path / "runs"),
                                    "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
                                    "LOOPLINE_TERMINATION_LOG": str(termination)})
    assert env["LOOPLINE_PARAM_REASON"] == NASTY  # what the container's environment holds
    argv = [kubelet_expand(a, env) for a in container["command"] + container.get("args", [])]
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(termination.read_text())
    assert report["phase"] == "Succeeded", report
    echo, use = report["outputs"]["echo"], report["outputs"]["use"]
    assert echo["text"] == echo["request"] == NASTY
    assert echo["argv"] == ["literal arg; $(whoami) `id`"]
    assert use["argv1"] == NASTY  # a placeholder filled with it stays one argv element
    assert report["steps"] == {"echo": "Succeeded", "use": "Succeeded", "gate": "Skipped",
                               "after-gate": "Skipped", "yes": "Succeeded"}
    assert "[echo]" in proc.stdout or "step echo" in proc.stdout  # step logs reach `kubectl logs`


def run_workflow(wf: dict, tmp: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """Walk the DAG like Argo: depends, when, parameter substitution, output parameters."""
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    tasks = templates[wf["spec"]["entrypoint"]]["dag"]["tasks"]
    phase: dict[str, str] = {}
    params: dict[str, dict[str, str]] = {}
    outputs: dict[str, dict] = {}

    def tasks_ref(text: str) -> str:
        return re.sub(r"\{\{tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)\}\}",
                      lambda m: params[m[1]][m[2]], text)

    for task in tasks:
        deps = [d.split(".")[0] for d in task.get("depends", "").split(" && ") if d]
        if any(phase[d] != "Succeeded" for d in deps):
            phase[task["name"]] = "Omitted"
            continue
        if "when" in task:
            expr = tasks_ref(task["when"])
            assert expr in ("true == true", "false == true"), expr
            if expr == "false == true":
                phase[task["name"]] = "Skipped"
                continue
        args_in = {p["name"]: tasks_ref(p["value"]) for p in task.get("arguments", {}).get("parameters", [])}
        tpl = templates[task["template"]]
        out_dir = tmp / task["name"]
        env = container_env(tpl["container"], {"LOOPLINE_OUT_DIR": str(out_dir),
                                               "LOOPLINE_STATE_DIR": str(out_dir / "state"),
                                               "LOOPLINE_TERMINATION_LOG": str(out_dir / "termination")})
        args = [re.sub(r"\{\{inputs\.parameters\.([\w-]+)\}\}", lambda m: args_in[m[1]], a)
                for a in tpl["container"]["args"]]
        argv = [kubelet_expand(a, env) for a in tpl["container"]["command"] + args]
        proc = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
        phase[task["name"]] = "Succeeded" if proc.returncode == 0 else "Failed"
        assert proc.returncode == 0, proc.stdout + proc.stderr
        params[task["name"]] = {
            p["name"]: Path(p["valueFrom"]["path"].replace(OUT_DIR, str(out_dir), 1)).read_text()
            for p in tpl["outputs"]["parameters"]}
        outputs[task["name"]] = json.loads(params[task["name"]]["outputs"].replace("$$", "$"))
    return phase, outputs


def test_argo_pods_pass_event_fields_verbatim(tmp_path):
    spec = launch_spec(reason=NASTY, steps=pipeline())
    phase, outputs = run_workflow(render_workflow(spec, SETTINGS, OWNER), tmp_path)
    assert phase == {"echo": "Succeeded", "use": "Succeeded", "gate": "Skipped", "after-gate": "Omitted",
                     "yes": "Succeeded"}
    assert outputs["echo"]["text"] == outputs["echo"]["request"] == NASTY
    assert outputs["echo"]["argv"] == ["literal arg; $(whoami) `id`"]
    assert outputs["use"]["argv1"] == NASTY
    assert outputs["use"]["inputs"]["echo"]["text"] == NASTY  # LOOPLINE_INPUTS as in a local run


def test_argo_step_with_a_missing_output_fails_like_a_local_run(tmp_path):
    steps = Pipeline((Step("a", ("python", "-c", "pass")),
                      Step("b", ("python", "-c", "pass", "{{steps.a.outputs.nothing}}"), depends=("a",))))
    wf = render_workflow(launch_spec(steps=steps), SETTINGS, OWNER)
    with pytest.raises(AssertionError, match="unknown output a.nothing"):
        run_workflow(wf, tmp_path)
