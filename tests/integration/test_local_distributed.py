"""Distributed runs on the local launcher: N real processes per step with the torchrun contract.

The step (tests/fixtures/steps/rendezvous.py) really meets over TCP: rank 0 listens on
MASTER_ADDR:MASTER_PORT, the others connect and send their rank, rank 0 answers with the ranks
it saw. Nothing is patched.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.waiting import wait_terminal
from triggers.local import LocalLauncher
from triggers.local_runner import kill_group, pid_alive, read_pid_file
from triggers.naming import run_name
from triggers.pipeline import FAILED, SUCCEEDED, LaunchSpec, Pipeline, Step
from triggers.render_distributed import Distributed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "steps"
MODEL = "ddp"


def rendezvous(*args: str, timeout: str = "20") -> Step:
    return Step("train", ("python", str(FIXTURES / "rendezvous.py"), *args), env={"RENDEZVOUS_TIMEOUT": timeout},
                timeout_seconds=60)


def spec(workdir: Path, *steps: Step, key: str = "k") -> LaunchSpec:
    return LaunchSpec(run_name=run_name(MODEL, key), model=MODEL, pipeline=Pipeline(steps), env={"A": "1"},
                      workdir=str(workdir))



@pytest.fixture
def launcher(tmp_path: Path):
    launcher = LocalLauncher(tmp_path / "state", distributed={MODEL: Distributed(workers=3)})
    yield launcher
    launcher.close()
    for run_dir in (tmp_path / "state" / "runs").iterdir():
        for pid_file in ("runner.pid", *(p.name for p in run_dir.glob("step*.pid"))):
            pid = read_pid_file(run_dir / pid_file)
            if pid is not None and pid_alive(*pid):
                kill_group(pid[0], signal.SIGKILL)


def test_three_local_ranks_meet_and_every_rank_writes_outputs(launcher, tmp_path):
    run = spec(tmp_path, rendezvous(), Step("after", ("python", "-c", "import os; print(os.environ.get('RANK'))"),
                                            depends=("train",)))
    assert launcher.submit(run) is True
    assert launcher.submit(run) is False                    # a redelivery starts nothing
    status = wait_terminal(launcher, run.run_name)
    assert status.phase == SUCCEEDED, (status.reason, status.log_tail)
    assert status.steps == {"train": SUCCEEDED, "after": SUCCEEDED}
    # The step's outputs are rank 0's: the ranks it met, over TCP.
    assert status.outputs["train"] == {"rank": 0, "world_size": 3, "ranks": [0, 1, 2]}
    steps = tmp_path / "state" / "runs" / run.run_name / "steps"
    for rank in (1, 2):
        assert json.loads((steps / f"train.rank{rank}.outputs.json").read_text()) == {"rank": rank, "ranks": [0, 1, 2]}
    # The contract each rank saw: one MASTER_ADDR / MASTER_PORT, its own RANK and LOCAL_RANK.
    logs = [(steps / name).read_text() for name in ("train.log", "train.rank1.log", "train.rank2.log")]
    heads = [re.search(r"rank (\d)/3 pid=\d+: MASTER_ADDR=(\S+) MASTER_PORT=(\d+) LOCAL_RANK=(\d)", log).groups()
             for log in logs]
    assert [h[0] for h in heads] == ["0", "1", "2"] and [h[3] for h in heads] == ["0", "1", "2"]
    assert {(h[1], h[2]) for h in heads} == {("127.0.0.1", heads[0][2])}
    # Every step of a distributed model runs on every rank, the next one only after all finished.
    assert (steps / "after.log").read_text().split() == ["0"]
    assert (steps / "after.rank2.log").read_text().split() == ["2"]
    assert not list((tmp_path / "state" / "runs" / run.run_name).glob("step*.pid"))


def test_one_failing_rank_fails_the_step_naming_it_and_the_others_are_stopped(launcher, tmp_path):
    # Without the stop, rank 0 would wait 30 s for the peer that died, and rank 2 for rank 0's answer.
    run = spec(tmp_path, rendezvous("1", timeout="30"), key="bad")
    started = time.monotonic()
    assert launcher.submit(run) is True
    status = wait_terminal(launcher, run.run_name)
    assert time.monotonic() - started < 10
    assert status.phase == FAILED
    assert status.reason == "step train rank 1 exited with code 3"
    assert "rank 1: failing on purpose" in status.log_tail          # the failed rank's log
    assert status.steps == {"train": FAILED}
    steps = tmp_path / "state" / "runs" / run.run_name / "steps"
    pids = [int(re.search(r"pid=(\d+)", (steps / name).read_text()).group(1))
            for name in ("train.log", "train.rank2.log")]
    assert not any(pid_alive(pid, None) for pid in pids)              # ranks 0 and 2 were stopped
    assert not (steps / "train.outputs.json").exists()               # rank 0 never completed


def test_a_model_that_is_not_distributed_still_runs_one_process(launcher, tmp_path):
    run = LaunchSpec(run_name=run_name("plain", "k"), model="plain", workdir=str(tmp_path), env={},
                     pipeline=Pipeline((Step("one", ("python", "-c", "import os; print(os.environ.get('RANK'))")),)))
    assert launcher.submit(run)
    status = wait_terminal(launcher, run.run_name)
    assert status.phase == SUCCEEDED
    steps = tmp_path / "state" / "runs" / run.run_name / "steps"
    assert (steps / "one.log").read_text().split() == ["None"] and not list(steps.glob("*.rank*"))
