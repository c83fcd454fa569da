"""A crashing step is retried with exponential back-off up to its count, then the run fails
with the reason and the last log lines; a deadline is not retried."""

from __future__ import annotations

import time

from tests.unit.test_local_launcher import (  # noqa: F401 - fixtures
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
