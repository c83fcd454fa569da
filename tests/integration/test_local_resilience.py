"""A crashing step is retried with exponential back-off up to its count, then the run fails
with the reason and the last log lines; a deadline is not retried."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.integration.test_local_launcher import (  # noqa: F401 - fixtures
    launcher, make_spec, script, wait_terminal, workdir)
from triggers.pipeline import Step


def test_a_flaky_step_succeeds_within_its_retries(launcher, make_spec):
    spec = make_spec(Step("train", script("flaky", "3"), retries=2, retry_backoff_seconds=0.1))
    started = time.monotonic()
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name, timeout=20)
    assert status.phase == "Succeeded", status.reason
    assert status.outputs["train"] == {"attempts": 3}
    assert time.monotonic() - started >= 0.1 + 0.2          # backed off 0.1 s, then 0.2 s


def test_retries_run_out_and_the_reason_says_so(launcher, make_spec):
    spec = make_spec(Step("train", script("flaky", "10"), retries=2, retry_backoff_seconds=0.05))
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name, timeout=20)
    assert status.phase == "Failed"
    assert status.reason == "step train exited with code 5 (after 3 attempts)"
    assert status.log_tail[-1] == "attempt 3"


def test_a_deadline_is_reported_not_retried(launcher, make_spec):
    spec = make_spec(Step("train", script("sleep", "30"), retries=3, timeout_seconds=0.5))
    launcher.submit(spec)
    status = wait_terminal(launcher, spec.run_name, timeout=20)
    assert status.phase == "Failed" and status.reason.startswith("DeadlineExceeded: step train")
    assert "attempts" not in status.reason


def test_a_claim_whose_submitter_died_is_started_by_the_redelivery(launcher, make_spec):
    """The worker was SIGKILLed after claiming the run directory and before starting the runner."""
    spec = make_spec(Step("train", script("write_outputs", "{\"done\": \"yes\"}")))
    claim = launcher.runs_dir / spec.run_name
    claim.mkdir()
    old = time.time() - 60
    os.utime(claim, (old, old))
    assert launcher.submit(spec) is False                   # the run exists: not a second run
    status = wait_terminal(launcher, spec.run_name, timeout=20)
    assert status.phase == "Succeeded" and status.outputs["train"] == {"done": "yes"}
    assert launcher.submit(spec) is False                   # and once started, never again
    assert len(list(launcher.runs_dir.iterdir())) == 1


def test_a_second_runner_for_the_same_run_exits_without_running_anything(launcher, make_spec, tmp_path):
    counter = tmp_path / "ran.txt"
    spec = make_spec(Step("train", script("append", str(counter))))
    launcher.submit(spec)
    wait_terminal(launcher, spec.run_name)
    from triggers import local_runner
    run_dir = launcher.runs_dir / spec.run_name
    deadline = time.monotonic() + 15             # the runner reports, then exits and unlocks
    while not local_runner._own(run_dir):
        assert time.monotonic() < deadline, "the finished runner never released its lock"
        time.sleep(0.05)                                    # this process now holds the lock...
    other = subprocess.run([sys.executable, "-m", "triggers.local_runner", str(run_dir)],
                           capture_output=True, timeout=30)
    assert other.returncode == 0                            # ...so another runner leaves at once
    assert counter.read_text().splitlines() == [spec.run_name]
