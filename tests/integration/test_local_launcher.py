"""LocalLauncher + local_runner with real processes: the tiny steps live in tests/fixtures/steps."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.waiting import wait_terminal, wait_until
from triggers.local import LocalLauncher
from triggers.local_runner import kill_group, pid_alive, read_pid_file
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, Pipeline, RunStatus, Step

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "steps"
EVIL = "a b; rm -rf / $(x) 'q' \"dq\" `id` | > * \\ {{"
T = TypeVar("T")


def script(name: str, *args: str) -> tuple[str, ...]:
    # "python" on purpose: the runner puts its own interpreter first on PATH.
    return ("python", str(FIXTURES / f"{name}.py"), *args)


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    return wait_until(check, timeout, what, interval=0.01)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LocalLauncher]:
    launcher = LocalLauncher(tmp_path / "state")
    yield launcher
    # Never leave sleeping runners or steps behind, whatever the test did.
    for run_dir in (tmp_path / "state" / "runs").iterdir():
        for pid_file in ("runner.pid", "step.pid"):
            pid = read_pid_file(run_dir / pid_file)
            if pid is not None and pid_alive(*pid):
                kill_group(pid[0], signal.SIGKILL)


@pytest.fixture
def make_spec(workdir: Path) -> Callable[..., LaunchSpec]:
    def make(*steps: Step, key: str = "evt-1", model: str = "churn", env: dict[str, str] | None = None) -> LaunchSpec:
        return LaunchSpec(
            run_name=run_name(model, key),
            model=model,
            pipeline=Pipeline(steps),
            env={"LOOPLINE_MODEL": model, "LOOPLINE_IDEMPOTENCY_KEY": key, **(env or {})},
            workdir=str(workdir),
        )

    return make


def test_three_step_dag_passes_outputs_along(launcher, make_spec, workdir) -> None:
    spec = make_spec(
        Step("prepare", script("emit", "rows=1000", "data_uri=file:///data/x.parquet", 'schema={"a": [1, 2]}')),
        Step(
            "train",
            script("emit", "model_uri=runs:/abc/model", "--data", "{{steps.prepare.outputs.data_uri}}",
                   "rows={{steps.prepare.outputs.rows}}", "--schema={{steps.prepare.outputs.schema}}"),
            depends=("prepare",),
            env={"ECHO_ENV": "LOOPLINE_MODEL,LOOPLINE_RUN_NAME,LOOPLINE_STEP,STEP_ONLY", "STEP_ONLY": "yes"},
        ),
        Step("evaluate", script("emit", "passed=true", "accuracy=0.93", "model={{steps.train.outputs.model_uri}}"),
             depends=("train",)),
    )
    assert launcher.submit(spec) is True
    status = wait_terminal(launcher, spec.run_name)

    assert status.phase == "Succeeded", status
    assert status.reason is None and status.started_at and status.finished_at >= status.started_at
    assert status.steps == {"prepare": "Succeeded", "train": "Succeeded", "evaluate": "Succeeded"}
    train = status.outputs["train"]
    assert train["argv"] == ["model_uri=runs:/abc/model", "--data", "file:///data/x.parquet", "rows=1000",
                             '--schema={"a": [1, 2]}']
    assert train["rows"] == 1000
    assert train["inputs"] == {"prepare": status.outputs["prepare"]}
    assert train["env"] == {"LOOPLINE_MODEL": "churn", "LOOPLINE_RUN_NAME": spec.run_name,
                            "LOOPLINE_STEP": "train", "STEP_ONLY": "yes"}
    assert train["cwd"] == str(workdir)
    # "python" resolved to the runner's interpreter directory (a venv's bin/), not the system one.
    assert os.path.dirname(train["executable"]) == os.path.dirname(sys.executable)
    assert status.outputs["evaluate"]["model"] == "runs:/abc/model"
    assert status.outputs["evaluate"]["passed"] is True
    assert set(status.outputs["evaluate"]["inputs"]) == {"prepare", "train"}
    log = launcher.runs_dir / spec.run_name / "steps" / "train.log"
    assert "emitted" in log.read_text()


def test_submit_is_idempotent_and_runs_once(launcher, make_spec, tmp_path) -> None:
    counter = tmp_path / "ran.txt"
    spec = make_spec(Step("train", script("append", str(counter))))
    assert launcher.submit(spec) is True
    assert launcher.submit(spec) is False  # redelivery: the 409 path
    assert LocalLauncher(tmp_path / "state").submit(spec) is False  # also after a worker restart
    assert wait_terminal(launcher, spec.run_name).phase == "Succeeded"
    assert counter.read_text().splitlines() == [spec.run_name]


def test_concurrent_submits_start_one_run(make_spec, tmp_path) -> None:
    counter = tmp_path / "ran.txt"
    spec = make_spec(Step("train", script("append", str(counter))), key="evt-race")
    launchers = [LocalLauncher(tmp_path / "state") for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(launchers))

    def submit(launcher: LocalLauncher) -> None:
        barrier.wait()
        results.append(launcher.submit(spec))

    threads = [threading.Thread(target=submit, args=(lnch,)) for lnch in launchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert wait_terminal(launchers[0], spec.run_name).phase == "Succeeded"
    assert counter.read_text().splitlines() == [spec.run_name]


def test_submit_returns_without_waiting_for_the_run(launcher, make_spec) -> None:
    spec = make_spec(Step("train", script("sleep", "30")))
    started = time.monotonic()
    assert launcher.submit(spec) is True
    assert time.monotonic() - started < 1.0
    assert launcher.status(spec.run_name).phase in ("Pending", "Running")


def test_failing_step_fails_the_run_with_reason_and_log_tail(launcher, make_spec) -> None:
    spec = make_spec(
        Step("prepare", script("emit", "rows=3")),
        Step("train", script("fail", "3", "30"), depends=("prepare",)),
        Step("evaluate", script("emit"), depends=("train",)),
    )
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed"
    assert status.reason == "step train exited with code 3"
    assert status.log_tail == tuple(f"line {n}" for n in range(11, 31))
    # later steps never ran: their phase stays Pending
    assert status.steps == {"prepare": "Succeeded", "train": "Failed", "evaluate": "Pending"}
    assert not (launcher.runs_dir / spec.run_name / "steps" / "evaluate.log").exists()


def test_when_false_skips_the_step_and_its_dependents(launcher, make_spec) -> None:
    spec = make_spec(
        Step("evaluate", script("emit", "accuracy=0.5", "passed=false")),
        Step("register", script("emit"), depends=("evaluate",), when="evaluate.passed == true"),
        Step("notify", script("emit"), depends=("register",)),
        Step("report", script("emit"), depends=("evaluate",), when="evaluate.accuracy < 0.9"),
    )
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Succeeded"
    assert status.steps == {"evaluate": "Succeeded", "register": "Skipped", "notify": "Skipped",
                            "report": "Succeeded"}
    assert set(status.outputs) == {"evaluate", "report"}


def test_timeout_kills_the_step_and_reports_deadline_exceeded(launcher, make_spec, tmp_path) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = make_spec(Step("train", script("sleep", "30", str(pid_file)), timeout_seconds=0.5))
    started = time.monotonic()
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert time.monotonic() - started < 5
    assert status.phase == "Failed"
    assert status.reason == "DeadlineExceeded: step train ran past 0.5s"
    assert status.steps == {"train": "Failed"}
    assert status.log_tail == ("sleeping 30",)
    step_pid = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(step_pid, None), 5, "the timed-out step to be gone")


def test_metacharacters_stay_literal_in_argv_and_env(launcher, make_spec, workdir) -> None:
    spec = make_spec(
        Step("prepare", script("emit", f"evil={EVIL}")),
        Step(
            "train",
            script("emit", EVIL, "{{steps.prepare.outputs.evil}}", "--flag={{steps.prepare.outputs.evil}}"),
            depends=("prepare",),
            env={"ECHO_ENV": "EVIL_SPEC,EVIL_STEP", "EVIL_STEP": EVIL},
        ),
        env={"EVIL_SPEC": EVIL},
    )
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Succeeded", status
    assert status.outputs["prepare"]["evil"] == EVIL
    assert status.outputs["train"]["argv"] == [EVIL, EVIL, f"--flag={EVIL}"]
    assert status.outputs["train"]["env"] == {"EVIL_SPEC": EVIL, "EVIL_STEP": EVIL}
    assert sorted(p.name for p in workdir.iterdir()) == []  # no shell ran: nothing like `> *` happened


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "step train wrote invalid JSON to its outputs file: Expecting value"),
        ("[1, 2]", "step train outputs must be a JSON object, got list"),
    ],
)
def test_bad_outputs_file_fails_the_step(launcher, make_spec, text, reason) -> None:
    spec = make_spec(Step("train", script("write_outputs", text)))
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed" and status.steps == {"train": "Failed"}
    assert status.reason.startswith(reason)


def test_unknown_output_at_run_time_fails_the_step(launcher, make_spec) -> None:
    spec = make_spec(
        Step("prepare", script("emit", "rows=3")),
        Step("train", script("emit", "{{steps.prepare.outputs.data_uri}}"), depends=("prepare",)),
    )
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed" and status.steps["train"] == "Failed"
    assert "step train: unknown output prepare.data_uri" in status.reason


def test_missing_executable_fails_the_step(launcher, make_spec) -> None:
    spec = make_spec(Step("train", ("loopline-no-such-binary", "x")))
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed"
    assert status.reason.startswith("step train could not start:")


def test_runner_keeps_an_existing_pythonpath(launcher, make_spec, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    spec = make_spec(Step("train", script("emit"), env={"ECHO_ENV": "PYTHONPATH"}))
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Succeeded", status
    parts = status.outputs["train"]["env"]["PYTHONPATH"].split(os.pathsep)
    assert parts[-1] == "/opt/extra" and (Path(parts[0]) / "triggers" / "__init__.py").exists()


def _running(launcher: LocalLauncher, name: str, step: str) -> Callable[[], bool]:
    def check() -> bool:
        status = launcher.status(name)
        return status is not None and status.steps.get(step) == "Running"

    return check


def test_sigkilled_runner_is_reported_as_died(launcher, make_spec, tmp_path) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = make_spec(Step("train", script("sleep", "30", str(pid_file))))
    launcher.submit(spec)
    wait_for(_running(launcher, spec.run_name, "train"), what="train to run")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the step to write its pid")
    runner_pid, _ = read_pid_file(launcher.runs_dir / spec.run_name / "runner.pid")
    os.kill(runner_pid, signal.SIGKILL)

    # A fresh launcher (worker restart) sees the corpse through the pid file, not a child handle.
    fresh = LocalLauncher(tmp_path / "state")
    status = wait_for(lambda: next((s for s in fresh.poll() if s.terminal), None), what="death to be noticed")
    assert status.phase == "Failed" and status.reason == "runner process died"
    assert status.steps == {"train": "Running"}  # the last thing the runner wrote
    assert launcher.status(spec.run_name).reason == "runner process died"  # persisted for every reader
    step_pid = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(step_pid, None), 5, "the orphaned step to be killed")


def test_cancel_stops_the_run(launcher, make_spec, tmp_path) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = make_spec(Step("train", script("sleep", "30", str(pid_file))), Step("after", script("emit"),
                                                                               depends=("train",)))
    launcher.submit(spec)
    wait_for(_running(launcher, spec.run_name, "train"), what="train to run")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the step to write its pid")
    started = time.monotonic()
    launcher.cancel(spec.run_name)
    assert time.monotonic() - started < 3
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed" and status.reason == "cancelled"
    assert status.steps == {"train": "Failed", "after": "Pending"}
    step_pid = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(step_pid, None), 5, "the cancelled step to be gone")


def test_poll_reports_each_phase_once_until_acknowledged(launcher, make_spec, tmp_path) -> None:
    spec = make_spec(Step("train", script("emit")))
    launcher.submit(spec)
    seen: list[RunStatus] = []
    wait_for(lambda: seen.extend(launcher.poll()) or (seen and seen[-1].terminal), what="a terminal poll")
    phases = [s.phase for s in seen]
    assert phases[-1] == "Succeeded" and phases.count("Succeeded") == 1
    assert len(phases) == len(set(phases))  # each phase at most once, in order
    assert launcher.poll() == []

    # Not acknowledged yet: a restarted worker is told again (at-least-once).
    again = LocalLauncher(tmp_path / "state").poll()
    assert [(s.run_name, s.phase) for s in again] == [(spec.run_name, "Succeeded")]

    launcher.mark_reported(spec.run_name)
    assert (launcher.runs_dir / spec.run_name / "reported").exists()
    assert launcher.poll() == []
    assert LocalLauncher(tmp_path / "state").poll() == []
    assert launcher.status(spec.run_name).phase == "Succeeded"  # still readable


def test_acknowledging_a_running_status_does_not_hide_the_terminal_one(launcher, make_spec) -> None:
    spec = make_spec(Step("train", script("sleep", "0.3")))
    launcher.submit(spec)
    first = wait_for(launcher.poll, what="a first status")
    assert not first[-1].terminal
    launcher.mark_reported(spec.run_name)  # acks Pending/Running: no-op
    assert not (launcher.runs_dir / spec.run_name / "reported").exists()
    statuses: list[RunStatus] = []
    wait_for(lambda: statuses.extend(launcher.poll()) or any(s.terminal for s in statuses), what="terminal")
    assert statuses[-1].phase == "Succeeded"


def _fake_finished_run(runs_dir: Path, name: str, reported: bool) -> None:
    run_dir = runs_dir / name
    (run_dir / "steps").mkdir(parents=True)
    status = RunStatus(run_name=name, model="m", phase="Succeeded", outputs={}, steps={"train": "Succeeded"})
    (run_dir / "status.json").write_text(json.dumps(status.to_dict()))
    (run_dir / "runner.pid").write_text("999999\n\n")
    if reported:
        (run_dir / "reported").touch()


def test_poll_opens_no_file_of_an_acknowledged_run(tmp_path) -> None:
    # Cheap polls with a thousand old runs, asserted by what poll() does, not by a stopwatch:
    # the interpreter's audit hook sees every open(); an acknowledged run's files are never read.
    runs_dir = tmp_path / "state" / "runs"
    for index in range(1000):
        _fake_finished_run(runs_dir, f"old-{index:04d}", reported=True)
    for index in range(50):
        _fake_finished_run(runs_dir, f"unreported-{index:02d}", reported=False)

    launcher = LocalLauncher(tmp_path / "state")
    opened: list[str] = []
    recording = threading.Event()
    sys.addaudithook(lambda event, args: recording.is_set() and event == "open"
                     and opened.append(str(args[0])))
    recording.set()
    first = launcher.poll()
    recording.clear()
    assert sorted(s.run_name for s in first) == [f"unreported-{i:02d}" for i in range(50)]
    assert not [path for path in opened if "/old-" in path]       # restart: only the marker is checked
    for status in first:
        launcher.mark_reported(status.run_name)

    opened.clear()
    recording.set()
    for _ in range(100):
        assert launcher.poll() == []
    recording.clear()
    assert not [path for path in opened if str(runs_dir) in path], opened[:5]


def test_cancel_right_after_submit_still_ends_as_cancelled(launcher, make_spec) -> None:
    spec = make_spec(Step("train", script("sleep", "30")))
    launcher.submit(spec)
    launcher.cancel(spec.run_name)  # the runner may not even have installed its handler yet
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed" and status.reason == "cancelled"


def test_cancel_escalates_to_sigkill(launcher, make_spec, tmp_path) -> None:
    # The step ignores SIGTERM, so the runner is still waiting out its own grace when ours ends.
    pid_file = tmp_path / "stubborn.pid"
    spec = make_spec(Step("train", script("stubborn", "30", str(pid_file))))
    launcher.submit(spec)
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the step to write its pid")
    launcher.cancel(spec.run_name, grace=0.3)
    status = wait_terminal(launcher, spec.run_name)
    assert status.phase == "Failed"
    assert status.reason == "cancelled (runner did not exit within 0.3s, killed)"
    step_pid = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(step_pid, None), 5, "the stubborn step to be killed")
    assert launcher.poll()[-1].reason.startswith("cancelled")


def test_cancel_of_a_finished_run_changes_nothing(launcher, make_spec) -> None:
    spec = make_spec(Step("train", script("emit")))
    launcher.submit(spec)
    assert wait_terminal(launcher, spec.run_name).phase == "Succeeded"
    launcher.cancel(spec.run_name)
    assert launcher.status(spec.run_name).phase == "Succeeded"
    launcher.cancel("never-submitted")  # unknown runs are ignored too
