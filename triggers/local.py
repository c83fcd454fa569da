"""LocalLauncher: run pipelines as detached local processes and watch them through files.

This is the embedded runtime (demo, tests, a single box). It honours the same
delivery contract as the Kubernetes and Argo launchers:

- submit() is idempotent on the run name: the run directory is claimed with an
  atomic os.mkdir, and "already exists" means "already launched" (the 409 path),
  so a redelivered request never starts a second run;
- submit() returns as soon as the supervisor process is spawned; the worker never
  waits for training. Supervisors are forked by a small fork server (`triggers.spawner`)
  that has imported the runner once, so a launch costs a fork, not an interpreter start
  (~1 ms instead of ~60-80 ms of CPU); without it they start as new interpreters;
- runs survive worker restarts (own session), and poll() in a fresh launcher
  picks them up from disk; a terminal status is reported until mark_reported()
  acknowledges it, which gives at-least-once completion events;
- a supervisor that died without a word (SIGKILL, OOM killer) is detected by pid
  liveness and reported as Failed, so no run hangs in Running forever.

The on-disk layout is documented in triggers.local_runner, which writes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triggers.local_runner import (
    PID_FILE,
    REPORTED_FILE,
    RUNNER_LOG,
    SPEC_FILE,
    STATUS_FILE,
    STEP_PID_FILE,
    STEPS_DIR,
    atomic_write_json,
    kill_group,
    pid_alive,
    read_json,
    read_pid_file,
    tail_lines,
    write_pid_file,
)
from triggers.per_model import PerModel
from triggers.pipeline import FAILED, PENDING, TERMINAL_PHASES, LaunchSpec, RunStatus

__all__ = ["LocalLauncher"]
log = logging.getLogger("loopline.local")

# The directory that contains the `triggers` package: the runner must import it from there.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# A run dir without a runner pid this old was claimed by a launcher that crashed mid-submit.
NEVER_STARTED_AFTER = 60.0
ORPHANED_AFTER = 5.0   # a claimed run with no runner this old lost its submitter: resume it
CANCEL_GRACE = 5.0

_StatKey = tuple[int, int, int]


class LocalLauncher:
    kind = "local"

    def __init__(self, state_dir: str | Path, python: str = sys.executable,
                 fork_server: bool = True, distributed: Mapping[str, Any] | None = None) -> None:
        """`distributed`: model -> its number of ranks (or anything with `.workers`, e.g. a
        triggers.render_distributed.Distributed): each step of its runs runs as that many
        processes with the torchrun contract (see triggers.local_runner)."""
        self.state_dir = Path(state_dir).resolve()
        self.distributed = PerModel({model: int(getattr(d, "workers", d)) for model, d in (distributed or {}).items()})
        self.runs_dir = self.state_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self._forker = _ForkServer(python) if fork_server else None
        self._lock = threading.RLock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # ours: poll() reaps them (no zombies)
        self._done: set[str] = set()  # terminal and acknowledged: never read again
        self._terminal: dict[str, RunStatus] = {}  # terminal, unacknowledged: final, so cached
        self._last_phase: dict[str, str] = {}  # what poll() last returned per run
        self._cache: dict[str, tuple[_StatKey | None, RunStatus]] = {}  # status.json by stat key
        self._pids: dict[str, tuple[int, int | None]] = {}

    # --- submit / cancel ------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> bool:
        """Start the run unless its name is taken; False means "already launched" (not an error)."""
        run_dir = self.runs_dir / spec.run_name
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            self._resume_orphaned_claim(run_dir, spec)
            return False
        try:
            pid, proc = self._spawn(run_dir, spec)
        except BaseException:
            # Nothing started: release the claim so a redelivery can try again.
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        # Written here too (the runner writes it once it holds the run's lock) so that a cancel
        # right after submit finds the process; a resumed claim leaves it to the runner alone.
        write_pid_file(run_dir / PID_FILE, pid)
        if proc is not None:
            with self._lock:
                self._children[spec.run_name] = proc
        return True

    def _resume_orphaned_claim(self, run_dir: Path, spec: LaunchSpec) -> None:
        """A run directory with neither a runner pid nor a status was claimed by a submitter that
        died before starting the runner (a worker killed mid-submit). The redelivered request
        starts the runner now; the runner's lock makes a racing second start a no-op."""
        if (run_dir / PID_FILE).exists() or (run_dir / STATUS_FILE).exists():
            return
        if time.time() - run_dir.stat().st_mtime < ORPHANED_AFTER:
            return                      # a live submitter is still starting it (milliseconds)
        log.warning("run %s was claimed but never started: starting it now", spec.run_name)
        _, proc = self._spawn(run_dir, spec)
        if proc is not None:
            with self._lock:
                self._children[spec.run_name] = proc

    def close(self) -> None:
        """Stop the fork server (runs it started go on: they are in their own sessions)."""
        if self._forker is not None:
            self._forker.stop()

    def spec(self, run_name: str) -> LaunchSpec | None:
        """The spec a run was launched with (the watcher needs its request to report on it)."""
        data = read_json(self.runs_dir / run_name / SPEC_FILE)
        return LaunchSpec.from_dict(data) if isinstance(data, dict) else None

    def _spawn(self, run_dir: Path, spec: LaunchSpec) -> tuple[int, subprocess.Popen[bytes] | None]:
        """Start the runner: forked by the fork server (about a millisecond), or, if that is
        off or failing, as `python -m triggers.local_runner RUN_DIR` (an interpreter start)."""
        data = spec.to_dict()
        data["workdir"] = os.path.abspath(spec.workdir)  # the runner's cwd is the run dir
        if self.distributed.get(spec.model, 1) > 1:
            data["distributed"] = {"workers": self.distributed[spec.model]}
        if not (run_dir / SPEC_FILE).exists():          # a resumed claim keeps its spec
            atomic_write_json(run_dir / SPEC_FILE, data)
        (run_dir / STEPS_DIR).mkdir(exist_ok=True)
        if self._forker is not None:
            try:
                return self._forker.spawn(run_dir), None
            except OSError as exc:
                log.warning("fork server failed (%s): starting the runner as a new interpreter", exc)
        with (run_dir / RUNNER_LOG).open("ab") as runner_log:
            proc = subprocess.Popen(
                [self.python, "-m", "triggers.local_runner", str(run_dir)],
                cwd=run_dir,
                env=_runner_env(),
                stdin=subprocess.DEVNULL,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the worker; its own group for cancel()
                close_fds=True,
            )
        return proc.pid, proc

    def cancel(self, run_name: str, grace: float = CANCEL_GRACE) -> None:
        """SIGTERM the runner (it kills its step and writes Failed "cancelled"); SIGKILL after `grace`.

        Blocks until the runner is gone (normally well under a second; at most `grace`
        plus a moment): call it off the event loop. A finished run is left alone.
        """
        with self._lock:
            current = self._load(run_name)
            pid = self._runner_pid(run_name)
        if current is None or current.terminal or pid is None or not self._runner_alive(run_name, pid):
            return  # nothing to stop; a dead runner is reported by poll()
        kill_group(pid[0], signal.SIGTERM)
        reason = "cancelled"
        if not self._wait_runner_exit(run_name, pid, grace):
            kill_group(pid[0], signal.SIGKILL)
            _kill_orphan_step(self.runs_dir / run_name)
            self._wait_runner_exit(run_name, pid, 1.0)
            reason = f"cancelled (runner did not exit within {grace:g}s, killed)"
        with self._lock:
            # A runner TERMed before it installed its handler exits without a word: say why.
            status = self._read_status(run_name)
            if status is None or not status.terminal:
                self._write_failed(run_name, reason, ())

    def _wait_runner_exit(self, run_name: str, pid: tuple[int, int | None], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._runner_alive(run_name, pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # --- watching -------------------------------------------------------------------

    def poll(self) -> list[RunStatus]:
        """Runs whose phase changed since this object's last poll(); first call: all unacknowledged."""
        with self._lock:
            self._reap_children()
            changed: list[RunStatus] = []
            for name in self._run_names():
                if name in self._done:
                    continue
                if name not in self._last_phase and (self.runs_dir / name / REPORTED_FILE).exists():
                    self._done.add(name)  # acknowledged by an earlier launcher (before a restart)
                    continue
                status = self._load(name)
                if status is not None and status.phase != self._last_phase.get(name):
                    self._last_phase[name] = status.phase
                    changed.append(status)
            return changed

    def mark_reported(self, run_name: str) -> None:
        """Acknowledge the terminal status poll() returned: it is never returned again.

        Acknowledging a non-terminal status (Pending/Running) is a no-op, so the
        terminal one that may have landed meanwhile is still reported.
        """
        with self._lock:
            last = self._last_phase.get(run_name)
            if last is not None and last not in TERMINAL_PHASES:
                return
            status = self._load(run_name)
            if status is None or not status.terminal:
                return
            (self.runs_dir / run_name / REPORTED_FILE).touch()
            self._done.add(run_name)
            self._terminal.pop(run_name, None)
            self._cache.pop(run_name, None)
            self._pids.pop(run_name, None)

    def status(self, run_name: str) -> RunStatus | None:
        """Current status of one run (None if unknown); does not affect poll()'s bookkeeping."""
        with self._lock:
            return self._load(run_name)

    # --- internals ------------------------------------------------------------------

    def _run_names(self) -> list[str]:
        with os.scandir(self.runs_dir) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]

    def _reap_children(self) -> None:
        for name, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[name]

    def _load(self, name: str) -> RunStatus | None:
        """Status from disk, with the dead-runner check for runs that claim to be active."""
        if name in self._terminal:
            return self._terminal[name]
        run_dir = self.runs_dir / name
        status = self._read_status(name)
        if status is None:
            return None
        if not status.terminal and self._runner_dead(name, run_dir):
            # The runner writes its final status before exiting: re-read before declaring death.
            status = self._read_status(name)
            if status is not None and not status.terminal:
                _kill_orphan_step(run_dir)
                reason = "runner process died" if self._runner_pid(name) else "runner never started"
                status = self._write_failed(name, reason, tail_lines(run_dir / RUNNER_LOG))
        if status is not None and status.terminal:
            self._terminal[name] = status
            self._cache.pop(name, None)
        return status

    def _read_status(self, name: str) -> RunStatus | None:
        """status.json, parsed only when its inode/mtime/size changed; Pending from spec.json before."""
        run_dir = self.runs_dir / name
        try:
            st = os.stat(run_dir / STATUS_FILE)
            key: _StatKey | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        status = _parse_status(run_dir) if key is not None else _pending_status(run_dir)
        if status is not None:
            self._cache[name] = (key, status)
        return status

    def _runner_pid(self, name: str) -> tuple[int, int | None] | None:
        if name not in self._pids:
            pid = read_pid_file(self.runs_dir / name / PID_FILE)
            if pid is None:
                return None
            self._pids[name] = pid
        return self._pids[name]

    def _runner_alive(self, name: str, pid: tuple[int, int | None]) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None  # our child: poll() also reaps it
        return pid_alive(*pid)

    def _runner_dead(self, name: str, run_dir: Path) -> bool:
        pid = self._runner_pid(name)
        if pid is None:
            try:
                age = time.time() - run_dir.stat().st_mtime
            except FileNotFoundError:
                return False
            return age > NEVER_STARTED_AFTER
        return not self._runner_alive(name, pid)

    def _write_failed(self, name: str, reason: str, log_tail: tuple[str, ...]) -> RunStatus:
        """Persist a terminal Failed on the runner's behalf, so every reader agrees afterwards."""
        run_dir = self.runs_dir / name
        current = self._read_status(name) or _pending_status(run_dir)
        status = RunStatus(
            run_name=name,
            model=current.model if current else "",
            phase=FAILED,
            outputs=current.outputs if current else {},
            steps=current.steps if current else {},
            reason=reason,
            log_tail=log_tail,
            started_at=current.started_at if current else None,
            finished_at=time.time(),
        )
        atomic_write_json(run_dir / STATUS_FILE, status.to_dict())
        self._cache.pop(name, None)
        self._terminal[name] = status
        return status


class _ForkServer:
    """The launcher's end of `triggers.spawner`: one line out (a run dir), one line back (a pid).

    Started at the first submit; restarted once if it died; its stdin closing (this object
    stopped or collected, the worker gone) ends it, never the runs it forked."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def spawn(self, run_dir: Path) -> int:
        with self.lock:
            for _ in range(2):
                if self.proc is None or self.proc.poll() is not None:
                    self._start()
                assert self.proc is not None and self.proc.stdin and self.proc.stdout
                try:
                    self.proc.stdin.write(f"{run_dir}\n".encode())
                    self.proc.stdin.flush()
                    answer = self.proc.stdout.readline().decode().strip()
                except OSError:
                    answer = ""
                if answer.isdigit():
                    return int(answer)
                if answer.startswith("error"):
                    raise OSError(answer)
                self._stop()                      # gone or garbled: a fresh one, once
            raise OSError("the fork server does not answer")

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [self.python, "-m", "triggers.spawner"], env=_runner_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True, close_fds=True, cwd=_PACKAGE_ROOT)

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        with self.lock:
            self._stop()


def _runner_env() -> dict[str, str]:
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, existing]) if existing else _PACKAGE_ROOT
    return env


def _parse_status(run_dir: Path) -> RunStatus | None:
    data = read_json(run_dir / STATUS_FILE)
    try:
        return RunStatus.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError):
        return None


def _pending_status(run_dir: Path) -> RunStatus | None:
    """Before the runner's first write: Pending, with the step list from spec.json if present."""
    if not run_dir.is_dir():
        return None
    spec = read_json(run_dir / SPEC_FILE)
    spec = spec if isinstance(spec, dict) else {}
    steps = (spec.get("pipeline") or {}).get("steps") or []
    return RunStatus(
        run_name=run_dir.name,
        model=str(spec.get("model", "")),
        phase=PENDING,
        outputs={},
        steps={step.get("name", "?"): PENDING for step in steps if isinstance(step, dict)},
    )


def _kill_orphan_step(run_dir: Path) -> None:
    """A step keeps running when its runner is SIGKILLed (own session): stop its group."""
    for path in [run_dir / STEP_PID_FILE, *sorted(run_dir.glob("step.rank*.pid"))]:  # every rank's
        pid = read_pid_file(path)
        if pid is not None and pid_alive(*pid):
            kill_group(pid[0], signal.SIGKILL)
