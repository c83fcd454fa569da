"""Sweep steps on the local launcher: real trial processes, a real Optuna journal, a real MLflow store.

The trial step is tests/fixtures/steps/sweep_trial.py (its objective is a function of its params).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.waiting import wait_terminal
from triggers.local import LocalLauncher
from triggers.local_runner import kill_group, pid_alive, read_pid_file
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, Pipeline, Step
from triggers.sweep import study_name

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "steps" / "sweep_trial.py"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0},
         "depth": {"type": "int", "low": 1, "high": 4},
         "kind": {"type": "categorical", "choices": ["a", "b"]}}
MODEL = "sweepy"


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LocalLauncher]:
    launcher = LocalLauncher(tmp_path / "state")
    yield launcher
    launcher.close()
    for run_dir in (tmp_path / "state" / "runs").iterdir():
        pid = read_pid_file(run_dir / "runner.pid")
        if pid is not None and pid_alive(*pid):
            kill_group(pid[0], 9)


def spec(tmp_path: Path, sweep: dict, key: str, name: str | None = None, env: dict | None = None) -> LaunchSpec:
    step = Step("train", ("python", str(FIXTURE)), sweep=sweep, env=env or {})
    return LaunchSpec(run_name=name or run_name(MODEL, key), model=MODEL, pipeline=Pipeline((step,)),
                      env={"LOOPLINE_MODEL": MODEL, "LOOPLINE_IDEMPOTENCY_KEY": key,
                           "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
                           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                      workdir=str(tmp_path))


# A bound, not a measurement: each trial process imports MLflow (seconds), and a full suite on two
# cores runs other stacks beside this one (measured: 23 s alone, over 40 s beside `make test`).
SWEEP_TIMEOUT = 180.0


def load_study(tmp_path: Path, key: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    name = study_name(MODEL, "train", key)
    path = tmp_path / "state" / "sweeps" / f"{name}.journal"
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def runs(tmp_path: Path, study: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    [parent] = client.search_runs([experiment], f"tags.`loopline.sweep` = '{study}'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def test_a_sweep_retries_a_killed_trial_nests_its_runs_and_a_relaunch_resumes_it(launcher, tmp_path) -> None:
    flag = tmp_path / "kill-once"
    flag.touch()
    sweep = {"space": SPACE, "objective": "accuracy", "direction": "maximize", "trials": 8, "parallelism": 2,
             "max_failed_trials": 2, "pruner": "none", "seed": 7}
    first = spec(tmp_path, sweep, "req-1", env={"SWEEP_KILL_FLAG": str(flag)})
    assert launcher.submit(first)
    status = wait_terminal(launcher, first.run_name, SWEEP_TIMEOUT)
    assert status.phase == "Succeeded", (status.reason, status.log_tail)
    assert not flag.exists()                                     # one trial did kill itself

    study = load_study(tmp_path, "req-1")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 8
    [failed] = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == failed.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == failed.params
    assert len(failed.intermediate_values) == 1                  # died after its first report
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)

    out = status.outputs["train"]
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials if t.value is not None)
    assert out["best_trial"] == best.number and out["best_params"] == best.params
    assert out["candidate_metrics"] == {"accuracy": best.value}
    assert out["candidate_version"] == best.user_attrs["outputs"]["model_version"]
    assert out["trials"] == {"complete": 8, "pruned": 0, "failed": 1}

    parent, children = runs(tmp_path, study.study_name)
    assert parent.info.status == "FINISHED" and parent.info.run_id == out["parent_run_id"]
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 8 + ["KILLED"]
    [killed] = [c for c in children if c.info.status == "KILLED"]
    assert killed.data.tags["loopline.trial"] == str(failed.number)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = client.get_model_version(MODEL, out["candidate_version"])
    assert version.tags["loopline.trial"] == str(best.number)    # the best trial's model is the candidate
    assert client.get_run(version.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id

    # The same request launched again (a relaunch after a lost run): the study is resumed, not restarted.
    again = spec(tmp_path, sweep, "req-1", name=run_name(MODEL, "req-1-relaunch"))
    assert launcher.submit(again)
    status2 = wait_terminal(launcher, again.run_name, SWEEP_TIMEOUT)
    assert status2.phase == "Succeeded", (status2.reason, status2.log_tail)
    assert len(load_study(tmp_path, "req-1").trials) == len(study.trials)     # nothing re-run
    assert status2.outputs["train"]["candidate_version"] == out["candidate_version"]
    assert not list((launcher.runs_dir / again.run_name / "steps").glob("train.trial*.log"))
    _, children2 = runs(tmp_path, study.study_name)
    assert len(children2) == 9


def test_the_pruner_stops_a_poor_trial_early(launcher, tmp_path) -> None:
    sweep = {"space": SPACE, "objective": "accuracy", "trials": 3, "parallelism": 1, "pruner": "median",
             "seed": 3}
    first = spec(tmp_path, sweep, "req-2")
    assert launcher.submit(first)
    status = wait_terminal(launcher, first.run_name, SWEEP_TIMEOUT)
    assert status.phase == "Succeeded", (status.reason, status.log_tail)
    study = load_study(tmp_path, "req-2")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 3
    assert all(len(t.intermediate_values) == 4 for t in complete)
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    _, children = runs(tmp_path, study.study_name)
    by_trial = {c.data.tags["loopline.trial"]: c for c in children}
    for trial in pruned:
        child = by_trial[str(trial.number)]
        assert child.info.status == "KILLED" and child.data.tags["loopline.trial_state"] == "PRUNED"
        history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
            child.info.run_id, "accuracy")
        assert len(history) == len(trial.intermediate_values)
        out = launcher.runs_dir / first.run_name / "steps" / f"train.trial{trial.number}.outputs.json"
        assert '"pruned": true' in out.read_text()


def test_the_steps_timeout_bounds_each_trial_and_a_trial_past_it_is_not_retried(launcher, tmp_path) -> None:
    sweep = {"space": SPACE, "objective": "accuracy", "trials": 2, "parallelism": 1, "max_failed_trials": 1}
    sleeper = str(Path(__file__).resolve().parents[1] / "fixtures" / "steps" / "sleep.py")
    step = Step("train", ("python", sleeper, "60"), sweep=sweep, timeout_seconds=1)
    hung = spec(tmp_path, sweep, "req-timeout")
    hung = LaunchSpec(run_name=hung.run_name, model=MODEL, pipeline=Pipeline((step,)), env=hung.env,
                      workdir=hung.workdir)
    started = time.monotonic()
    assert launcher.submit(hung)
    status = wait_terminal(launcher, hung.run_name, SWEEP_TIMEOUT)
    assert status.phase == "Failed" and "DeadlineExceeded: trial" in status.reason and "ran past 1s" in status.reason
    assert time.monotonic() - started < 30                   # not the trials' 60 s
    study = load_study(tmp_path, "req-timeout")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.user_attrs["crashed"] is False and "retry_of" not in t.user_attrs for t in study.trials)


@pytest.mark.parametrize("sweep, error", [
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "objective": "acc", "trials": 8},
     "sweep.space.lr: Value error, low (0.1) is above high (0.01)"),
    ({"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "objective": "acc", "trials": 8},
     "sweep.space.lr: Value error, log needs low > 0"),
    ({"space": {"k": {"type": "categorical"}}, "objective": "acc", "trials": 8},
     "sweep.space.k: Value error, a categorical parameter needs choices"),
    ({"space": {"k": {"type": "int", "low": 1, "high": 3}}, "objective": "acc", "trials": 8, "paralelism": 2},
     "sweep.paralelism: unknown key"),
    ({"space": {"k": {"type": "int", "low": 1, "high": 3}}, "objective": "acc"}, "sweep.trials: required key"),
    ({"space": {"k": {"type": "int", "low": 1, "high": 3}}, "objective": "acc", "trials": 2, "pruner": "hyperband"},
     "sweep.pruner: Input should be 'median' or 'none'"),
])
def test_a_bad_sweep_config_is_refused_naming_the_key(sweep, error) -> None:
    from loopline.config import ConfigError, parse

    raw = {"models": [{"name": "m", "pipeline": {"steps": [{"name": "evaluate", "command": ["x"], "sweep": sweep}]}}]}
    with pytest.raises(ConfigError) as refused:
        parse(raw, Path("loopline.yaml"))
    assert f"models[0].pipeline.steps[0].{error}" in str(refused.value)


def test_a_good_sweep_config_reaches_the_step() -> None:
    from loopline.config import parse

    sweep = {"space": {"k": {"type": "categorical", "choices": ["a", "b"]}}, "objective": "acc", "trials": 4,
             "parallelism": 2}
    raw = {"models": [{"name": "m", "pipeline": {"steps": [{"name": "evaluate", "command": ["x"], "sweep": sweep}]}}]}
    step = parse(raw, Path("loopline.yaml"))["m"].pipeline.step("evaluate")
    assert step.sweep["parallelism"] == 2 and step.sweep["pruner"] == "median"
    assert Step.from_dict(step.to_dict()) == step                 # survives spec.json
