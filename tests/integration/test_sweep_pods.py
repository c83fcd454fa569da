"""Sweep trials as cluster pods: each pod a real process, the study in a real PostgreSQL.

No cluster runs here, so this test plays the controllers, honestly and no more: it starts each pod's
container command (`python -m triggers.pod_entry ...`) with the environment and arguments the
launcher rendered, one emptyDir (a directory) per pod, and does what the Job controller or Argo
would do with them: at most `parallelism` trial pods at once, an index whose pod failed started
again (backoffLimitPerIndex / retryStrategy). Everything else is loopline's: the pipeline pod's
runner, the trial pods' ask/tell against the shared study, the MLflow parent and child runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.waiting import wait_until
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, Pipeline, Step
from triggers.podspec import PodSettings
from triggers.render_job import render_job
from triggers.render_sweep import render_trial_jobs
from triggers.render_workflow import render_workflow, unescape_outputs
from triggers.sweep import rdb_storage, study_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRIAL = str(REPO / "tests" / "fixtures" / "steps" / "sweep_trial.py")
WRITE = str(REPO / "tests" / "fixtures" / "steps" / "write_outputs.py")
MODEL = "tuned"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0},
         "depth": {"type": "int", "low": 1, "high": 4},
         "kind": {"type": "categorical", "choices": ["a", "b"]}}
SAW_BEST = ("python", "-c", "import json, os; best = json.loads(os.environ['LOOPLINE_INPUTS'])['train']; "
            "open(os.environ['LOOPLINE_OUTPUTS'], 'w').write(json.dumps({'saw': best['best_trial']}))")
POD = PodSettings(namespace="ml", image="loopline:test")
BOUND = 180.0   # a bound, not a measurement: every trial pod imports MLflow, beside a full suite


def pipeline(storage: str, trials: int, parallelism: int) -> Pipeline:
    sweep = {"space": SPACE, "objective": "accuracy", "trials": trials, "parallelism": parallelism,
             "max_failed_trials": 2, "pruner": "none", "seed": 7}
    return Pipeline((
        Step("prepare", ("python", WRITE, '{"rows": 7}')),
        Step("train", ("python", TRIAL, "--rows", "{{steps.prepare.outputs.rows}}"), depends=("prepare",),
             sweep=sweep, env={"LOOPLINE_SWEEP_STORAGE": storage}),
        Step("evaluate", SAW_BEST, depends=("train",)),
    ))


def launch(tmp_path: Path, storage: str, trials: int, parallelism: int) -> LaunchSpec:
    key = f"tests/sweep-pods#{time.time_ns()}"
    return LaunchSpec(run_name=run_name(MODEL, key), model=MODEL, pipeline=pipeline(storage, trials, parallelism),
                      env={"LOOPLINE_MODEL": MODEL, "LOOPLINE_IDEMPOTENCY_KEY": key,
                           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                      workdir=str(REPO))


class Pods:
    """Containers started as processes: the image's PATH and working directory, the rendered env."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []

    def start(self, name: str, container: dict, args: list[str] | None = None, **env: str) -> subprocess.Popen:
        pod_env = {e["name"]: e["value"].replace("$$", "$") for e in container["env"]}   # the kubelet's unescape
        pod_env.update(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                       PYTHONPATH=str(REPO))
        command = [*container["command"], *(args if args is not None else container.get("args", []))]
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, *command[1:]], cwd=REPO, env=pod_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the pod: its process and everything under it (the trial has a session of its own)."""
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def pods(tmp_path):
    running = Pods(tmp_path)
    yield running
    running.stop()


def load(storage: str, spec: LaunchSpec) -> optuna.Study:
    return optuna.load_study(study_name=study_name(MODEL, "train", spec.env["LOOPLINE_IDEMPOTENCY_KEY"]),
                             storage=rdb_storage(storage))


def child_runs(tmp_path: Path, study: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    [parent] = client.search_runs([experiment], f"tags.`loopline.sweep` = '{study}'")
    return parent, client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def index_controller(pods: Pods, container: dict, job: dict, tmp_path: Path, kill_index: int,
                     hold: Path, storage: str, spec: LaunchSpec) -> dict[int, list[int]]:
    """The Job controller for an Indexed Job: `parallelism` pods at once, a failed index started
    again while under backoffLimitPerIndex. Kills the pod of `kill_index` once its trial is mid-run
    (held after its first report), then lets every trial go on. Exit codes per index."""
    waiting, running, codes = list(range(job["completions"])), {}, {}
    killed = False
    deadline = time.monotonic() + BOUND
    while waiting or running:
        assert time.monotonic() < deadline, "trial pods did not finish"
        while waiting and len(running) < job["parallelism"]:
            index = waiting.pop(0)
            attempt = len(codes.get(index, []))
            running[index] = pods.start(f"trial-{index}-{attempt}", container, JOB_COMPLETION_INDEX=str(index),
                                        LOOPLINE_OUT_DIR=str(tmp_path / f"trial-{index}-{attempt}"),
                                        SWEEP_HOLD=str(hold))
        if not killed and kill_index in running:
            mid_run = [t for t in load_or_none(storage, spec) if t.user_attrs.get("index") == kill_index
                       and t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values]
            if mid_run:
                pods.kill(running[kill_index])
                killed = True
                hold.unlink()
        for index, proc in list(running.items()):
            if proc.poll() is not None:
                del running[index]
                codes.setdefault(index, []).append(proc.returncode)
                if proc.returncode != 0 and len(codes[index]) <= job["backoffLimitPerIndex"]:
                    waiting.insert(0, index)
        time.sleep(0.05)
    assert killed, "the pod to kill never had a trial mid-run"
    return codes


def load_or_none(storage: str, spec: LaunchSpec) -> list[optuna.trial.FrozenTrial]:
    try:
        return load(storage, spec).get_trials(deepcopy=False)
    except KeyError:                                   # not created yet
        return []


def test_the_job_launchers_trial_pods_run_one_trial_per_index_and_a_dead_pod_is_retried(tmp_path, pods, postgres):
    storage = postgres.dsn.replace("postgresql://", "postgresql+psycopg2://") + "/postgres"
    spec = launch(tmp_path, storage, trials=4, parallelism=4)
    run = render_job(spec, POD, "loopline-worker")
    (trial_job,) = render_trial_jobs(spec, POD, "loopline-worker", {"metadata": {"name": spec.run_name, "uid": "u"}})
    hold = tmp_path / "hold"
    hold.touch()
    report = tmp_path / "pipeline-pod" / "termination-log"
    report.parent.mkdir()
    pipeline_pod = pods.start("pipeline", run["spec"]["template"]["spec"]["containers"][0],
                              LOOPLINE_RUN_ROOT=str(tmp_path / "pipeline-pod" / "runs"),
                              LOOPLINE_STATE_DIR=str(tmp_path / "pipeline-pod" / "state"),
                              LOOPLINE_TERMINATION_LOG=str(report), SWEEP_HOLD=str(hold))
    codes = index_controller(pods, trial_job["spec"]["template"]["spec"]["containers"][0], trial_job["spec"],
                             tmp_path, kill_index=1, hold=hold, storage=storage, spec=spec)
    assert pipeline_pod.wait(BOUND) == 0, (tmp_path / "pipeline.log").read_text()
    assert codes == {0: [0], 1: [-signal.SIGKILL, 0], 2: [0], 3: [0]}

    study = load(storage, spec)
    trials = study.get_trials()
    by_state = {state: [t for t in trials if t.state == state] for state in optuna.trial.TrialState}
    (lost,) = by_state[optuna.trial.TrialState.FAIL]
    assert lost.user_attrs["index"] == 1 and lost.user_attrs["crashed"] is True
    assert len(by_state[optuna.trial.TrialState.COMPLETE]) == 4 and not by_state[optuna.trial.TrialState.RUNNING]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.params == lost.params and retry.state == optuna.trial.TrialState.COMPLETE
    assert sorted(t.user_attrs["index"] for t in by_state[optuna.trial.TrialState.COMPLETE]) == [0, 1, 2, 3]

    outputs = json.loads(report.read_text())["outputs"]
    best = max(by_state[optuna.trial.TrialState.COMPLETE], key=lambda t: t.value)
    assert (outputs["train"]["best_trial"], outputs["train"]["best_value"]) == (best.number, best.value)
    assert outputs["train"]["candidate_version"] == best.user_attrs["outputs"]["candidate_version"]
    assert outputs["train"]["trials"] == {"complete": 4, "pruned": 0, "failed": 1}
    assert outputs["train"]["argv"] == ["--rows", "7"]           # filled from prepare's outputs in each pod
    assert outputs["evaluate"] == {"saw": best.number}           # the step after the sweep got the best trial

    parent, children = child_runs(tmp_path, study.study_name)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4 + ["KILLED"]


def test_argo_opens_fans_out_and_closes_the_sweep_with_the_best_trial(tmp_path, pods, postgres):
    storage = postgres.dsn.replace("postgresql://", "postgresql+psycopg2://") + "/postgres"
    spec = launch(tmp_path, storage, trials=3, parallelism=3)
    templates = {t["name"]: t for t in render_workflow(spec, POD, "loopline-worker")["spec"]["templates"]}
    prepare_outputs = '{"rows":7}'

    def task(name: str, template: str, params: dict[str, str]) -> subprocess.Popen:
        container = templates[template]["container"]
        args = list(container["args"])
        for key, value in params.items():
            args = [a.replace(f"{{{{inputs.parameters.{key}}}}}", value) for a in args]
        return pods.start(name, container, args, LOOPLINE_OUT_DIR=str(tmp_path / name))

    assert task("open", "sweep-open-train", {"outputs-prepare": prepare_outputs}).wait(BOUND) == 0
    fan_out = templates["sweep-trials-train"]
    (trial,) = fan_out["dag"]["tasks"]
    indexes = range(int(trial["withSequence"]["count"]))
    started = [task(f"trial-{i}", trial["template"], {"index": str(i)}) for i in indexes]
    assert [p.wait(BOUND) for p in started] == [0, 0, 0]
    assert task("close", "step-train", {}).wait(BOUND) == 0, (tmp_path / "close.log").read_text()

    outputs = json.loads(unescape_outputs((tmp_path / "close" / "outputs.json").read_text()))
    study = load(storage, spec)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.user_attrs["index"] for t in complete) == [0, 1, 2]
    assert outputs["best_value"] == max(t.value for t in complete) and outputs["argv"] == ["--rows", "7"]
    # A retried trial pod of a settled index runs nothing (one trial per index).
    assert task("trial-0-again", trial["template"], {"index": "0"}).wait(BOUND) == 0
    assert len(load(storage, spec).get_trials()) == 3
    assert "index 0 settled already" in (tmp_path / "trial-0-again.log").read_text()
    parent, children = child_runs(tmp_path, study.study_name)
    assert parent.info.status == "FINISHED" and len(children) == 3
