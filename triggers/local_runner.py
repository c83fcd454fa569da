"""Supervisor process for one local pipeline run: `python -m triggers.local_runner RUN_DIR`.

The worker must never wait for training, and a worker restart must not kill a
run in flight. So LocalLauncher spawns this module detached, and everything the
worker needs to know later is a file in RUN_DIR:

    spec.json                     the LaunchSpec (written by the launcher)
    runner.pid                    "<pid>\\n<start ticks>\\n" of this process (pid-reuse guard)
    runner.log                    this process's own stdout/stderr
    status.json                   the RunStatus, replaced atomically at every transition
    step.pid                      pid + start ticks of the step running now (for clean-up)
    steps/<step>.log              the step's stdout+stderr
    steps/<step>.outputs.json     the JSON object the step writes to $LOOPLINE_OUTPUTS
    steps/<step>.times.json       {"started_at", "finished_at"}: when its process started and
                                  ended (wall clock; what the step itself took, incl. start-up)
    reported                      marker: the terminal status was acknowledged (launcher)

A distributed model (spec.json `"distributed": {"workers": N}`, written by the launcher) runs
each step as N processes with the torchrun contract (triggers.render_distributed.local_contract:
MASTER_ADDR=127.0.0.1, a free MASTER_PORT per attempt, WORLD_SIZE=N, RANK 0..N-1). Rank 0 is
the step as above (its log, its outputs, step.pid); rank i>0 writes steps/<step>.rank<i>.log
and steps/<step>.rank<i>.outputs.json, its pid in step.rank<i>.pid. The step succeeds when
every rank exits 0; the first rank that fails fails it ("step train rank 2 exited with code 3",
that rank's log tail) and the others are stopped (SIGTERM, SIGKILL after the grace period).

Steps run one at a time in topological order, as argv lists (never a shell), each
in its own process group so a timeout or a cancel can kill everything it spawned.
The small file helpers live here too because the launcher reads what this writes.
Stdlib only: this process must start fast and not drag the worker's imports along.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from triggers.conditions import parse as parse_condition
from triggers.render_distributed import local_contract
from triggers.pipeline import (
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    LaunchSpec,
    RunStatus,
    Step,
    UnknownOutputError,
    render_command,
)

SPEC_FILE = "spec.json"
LOCK_FILE = "runner.lock"
STATUS_FILE = "status.json"
PID_FILE = "runner.pid"
STEP_PID_FILE = "step.pid"
RUNNER_LOG = "runner.log"
REPORTED_FILE = "reported"
STEPS_DIR = "steps"
LOG_TAIL_LINES = 20
STEP_KILL_GRACE = 3.0  # SIGTERM -> SIGKILL for a step; below the launcher's 5 s runner grace
_WAIT_SLICE = 0.5  # how often the wait loop re-checks deadline/cancel (exit is seen sooner)


# --- files shared with the launcher -------------------------------------------------


def atomic_write_json(path: Path, data: Any) -> None:
    """Readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """None when the file is missing or unreadable (a writer never leaves it half-written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (/proc/<pid>/stat field 22), if known."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and ')', so split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # state (field 3), starttime (field 22)
    except (IndexError, ValueError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    ticks = process_start_ticks(pid)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{pid}\n{'' if ticks is None else ticks}\n")
    os.replace(tmp, path)


def read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """(pid, start ticks or None) or None if absent/garbled."""
    try:
        lines = path.read_text().split("\n")
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    ticks = int(lines[1]) if len(lines) > 1 and lines[1].strip().isdigit() else None
    return pid, ticks


def pid_alive(pid: int, start_ticks: int | None) -> bool:
    """Is this exact process still running? Zombies and reused pids count as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the start-time check below still applies
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): os.kill is all we have
    state, ticks = stat
    if state in ("Z", "X"):
        return False
    return start_ticks is None or ticks == start_ticks


def kill_group(pid: int, sig: int) -> None:
    """Signal a process group we created (pgid == leader pid); gone already is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail_lines(path: Path, limit: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> tuple[str, ...]:
    """Last `limit` lines of a log without reading a multi-GB file whole."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was probably cut in half by the seek
    return tuple(lines[-limit:])


def format_seconds(value: float) -> str:
    return f"{value:g}"


# --- the runner ---------------------------------------------------------------------


class _StepFailed(Exception):
    def __init__(self, reason: str, log_tail: tuple[str, ...] = (), retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail
        self.retryable = retryable      # a crash may pass on retry; a deadline or a bad spec will not


class _Runner:
    """Runs a LaunchSpec's steps and keeps status.json true at every transition."""

    def __init__(self, run_dir: Path, spec: LaunchSpec, ranks: int = 1) -> None:
        self.run_dir = run_dir
        self.spec = spec
        self.ranks = max(1, int(ranks))
        self.rank_procs: list[subprocess.Popen[bytes]] = []
        self.steps_dir = run_dir / STEPS_DIR
        self.phases: dict[str, str] = {step.name: PENDING for step in spec.pipeline.order()}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.started_at = time.time()
        self.cancelled = False
        self.current: subprocess.Popen[bytes] | None = None

    def on_signal(self, signum: int, _frame: Any) -> None:
        # Only flag + forward here; the main loop does the waiting and the status write.
        self.cancelled = True
        if self.current is not None and self.current.returncode is None:
            kill_group(self.current.pid, signal.SIGTERM)
        for proc in self.rank_procs:
            if proc.returncode is None:
                kill_group(proc.pid, signal.SIGTERM)

    def run(self) -> int:
        self.steps_dir.mkdir(exist_ok=True)
        self.write(RUNNING)
        for step in self.spec.pipeline.order():
            if self.cancelled:
                return self.finish(FAILED, "cancelled")
            if self.should_skip(step):
                self.phases[step.name] = SKIPPED
                self.write(RUNNING)
                continue
            try:
                self.outputs[step.name] = self.run_with_retries(step)
            except _StepFailed as failure:
                self.phases[step.name] = FAILED
                return self.finish(FAILED, failure.reason, failure.log_tail)
            self.phases[step.name] = SUCCEEDED
            self.write(RUNNING)
        return self.finish(SUCCEEDED)

    def should_skip(self, step: Step) -> bool:
        # A step downstream of a skipped one is skipped too (Argo's behaviour).
        if any(self.phases[dep] == SKIPPED for dep in step.depends):
            return True
        return step.when is not None and not parse_condition(step.when).evaluate(self.outputs)

    def run_with_retries(self, step: Step) -> dict[str, Any]:
        """Exponential back-off between attempts; the last failure's reason names the count."""
        for attempt in range(step.retries + 1):
            try:
                return self.run_step(step)
            except _StepFailed as failure:
                if not failure.retryable or self.cancelled or attempt == step.retries:
                    if attempt:
                        failure.reason += f" (after {attempt + 1} attempts)"
                    raise
                pause = step.retry_backoff_seconds * 2 ** attempt
                print(f"step {step.name}: attempt {attempt + 1} failed ({failure.reason}); "
                      f"retrying in {format_seconds(pause)}s", flush=True)
                self.sleep(pause)
        raise AssertionError("unreachable")

    def sleep(self, seconds: float) -> None:
        """A pause a cancel (SIGTERM) cuts short."""
        deadline = time.monotonic() + seconds
        while not self.cancelled and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def run_step(self, step: Step) -> dict[str, Any]:
        try:
            argv = render_command(step, self.outputs)
        except UnknownOutputError as exc:
            raise _StepFailed(str(exc)) from None
        self.phases[step.name] = RUNNING
        self.write(RUNNING)
        log_path = self.steps_dir / f"{step.name}.log"
        outputs_path = self.steps_dir / f"{step.name}.outputs.json"
        if step.sweep is not None:
            return self.run_sweep(step, argv, outputs_path)
        print(f"step {step.name}: starting {argv!r}", flush=True)
        started = time.time()
        failed_rank = None
        if self.ranks > 1:
            code, timed_out, failed_rank = self.execute_ranks(step, argv, log_path, outputs_path)
            if failed_rank:
                log_path = self.steps_dir / f"{step.name}.rank{failed_rank}.log"
        else:
            code, timed_out = self.execute(step, argv, log_path, outputs_path)
        atomic_write_json(self.steps_dir / f"{step.name}.times.json",
                          {"started_at": started, "finished_at": time.time()})
        print(f"step {step.name}: finished code={code} timed_out={timed_out}", flush=True)
        if self.cancelled:
            raise _StepFailed("cancelled", tail_lines(log_path))
        if timed_out:
            assert step.timeout_seconds is not None
            reason = f"DeadlineExceeded: step {step.name} ran past {format_seconds(step.timeout_seconds)}s"
            raise _StepFailed(reason, tail_lines(log_path))
        if code != 0:
            who = step.name if failed_rank is None else f"{step.name} rank {failed_rank}"
            raise _StepFailed(_exit_reason(who, code), tail_lines(log_path), retryable=True)
        return _read_outputs(step.name, outputs_path, log_path)

    def run_sweep(self, step: Step, argv: tuple[str, ...], outputs_path: Path) -> dict[str, Any]:
        """A sweep step: triggers.sweep runs its command once per trial (imported here only:
        it brings Optuna, and every other run must start fast)."""
        from triggers.sweep import SweepFailed, run_sweep

        print(f"step {step.name}: sweep of {argv!r}", flush=True)
        started = time.time()
        try:
            outputs = run_sweep(step.name, step.sweep or {}, argv, self.step_env(step, outputs_path),
                                self.spec.workdir, self.steps_dir, self.run_dir, lambda: self.cancelled,
                                step.timeout_seconds)
        except SweepFailed as failure:
            tail = tail_lines(failure.log_path) if failure.log_path else ()
            raise _StepFailed(failure.reason, tail) from None
        finally:
            atomic_write_json(self.steps_dir / f"{step.name}.times.json",
                              {"started_at": started, "finished_at": time.time()})
        atomic_write_json(outputs_path, outputs)
        return outputs

    def execute_ranks(self, step: Step, argv: tuple[str, ...], log_path: Path, outputs_path: Path
                      ) -> tuple[int, bool, int | None]:
        """Start the step once per rank (each its own process group); (exit code, timed out, failed rank).

        All exit 0: (0, False, None). The first rank seen failing (lowest rank among those found
        failed at once) gives the code; the other ranks are stopped then."""
        port = free_port()
        self.rank_procs = []
        try:
            for rank in range(self.ranks):
                rank_log = log_path if rank == 0 else self.steps_dir / f"{step.name}.rank{rank}.log"
                rank_outputs = outputs_path if rank == 0 else self.steps_dir / f"{step.name}.rank{rank}.outputs.json"
                env = self.step_env(step, rank_outputs)
                env.update(local_contract(rank, self.ranks, port))
                with rank_log.open("ab") as log:
                    try:
                        proc = subprocess.Popen(argv, cwd=self.spec.workdir, env=env, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                close_fds=True)
                    except OSError as exc:
                        log.write(f"could not start {argv!r}: {exc}\n".encode())
                        raise _StepFailed(f"step {step.name} rank {rank} could not start: {exc}",
                                          tail_lines(rank_log)) from None
                self.rank_procs.append(proc)
                write_pid_file(self.run_dir / _rank_pid_file(rank), proc.pid)
            return self.wait_ranks(step.timeout_seconds)
        finally:
            for rank, proc in enumerate(self.rank_procs):
                kill_group(proc.pid, signal.SIGKILL)  # whatever a rank left behind in its group
                if proc.returncode is None:
                    proc.wait()
                (self.run_dir / _rank_pid_file(rank)).unlink(missing_ok=True)
            self.rank_procs = []

    def wait_ranks(self, timeout: float | None) -> tuple[int, bool, int | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        procs = self.rank_procs
        while True:
            codes = [proc.poll() for proc in procs]
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                _stop_all(procs)
                return codes[failed[0]] or 1, False, failed[0]
            if all(code == 0 for code in codes):
                return 0, False, None
            if self.cancelled:
                _stop_all(procs)
                return 1, False, None
            if deadline is not None and time.monotonic() >= deadline:
                _stop_all(procs)
                return 1, True, None
            time.sleep(0.02)

    def execute(self, step: Step, argv: tuple[str, ...], log_path: Path, outputs_path: Path) -> tuple[int, bool]:
        """Start the step in its own process group, wait for it; (exit code, timed out)."""
        env = self.step_env(step, outputs_path)
        with log_path.open("ab") as log:
            try:
                self.current = subprocess.Popen(
                    argv,
                    cwd=self.spec.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                log.write(f"could not start {argv!r}: {exc}\n".encode())
                raise _StepFailed(f"step {step.name} could not start: {exc}", tail_lines(log_path)) from None
        proc = self.current
        write_pid_file(self.run_dir / STEP_PID_FILE, proc.pid)
        try:
            timed_out = self.wait(proc, step.timeout_seconds)
        finally:
            kill_group(proc.pid, signal.SIGKILL)  # whatever the step left behind in its group
            self.current = None
            (self.run_dir / STEP_PID_FILE).unlink(missing_ok=True)
        return proc.returncode, timed_out

    def wait(self, proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
        """Wait for exit; on deadline or cancel, stop the group. Returns True if timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            budget = _WAIT_SLICE if deadline is None else max(0.0, min(_WAIT_SLICE, deadline - time.monotonic()))
            try:
                proc.wait(timeout=budget)
                return False
            except subprocess.TimeoutExpired:
                pass
            if self.cancelled:
                _stop(proc)
                return False
            if deadline is not None and time.monotonic() >= deadline:
                _stop(proc)
                return True

    def step_env(self, step: Step, outputs_path: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so log tails show progress of a killed step
        env.update(self.spec.env)
        env.update(step.env)
        env.update(
            LOOPLINE_RUN_NAME=self.spec.run_name,
            LOOPLINE_RUN_DIR=str(self.run_dir),
            LOOPLINE_STEP=step.name,
            LOOPLINE_OUTPUTS=str(outputs_path),
            LOOPLINE_INPUTS=json.dumps(self.outputs),
        )
        # "python" in a command must mean the interpreter that runs loopline.
        env["PATH"] = os.pathsep.join(filter(None, [os.path.dirname(sys.executable), env.get("PATH", "")]))
        return env

    def write(self, phase: str, reason: str | None = None, log_tail: tuple[str, ...] = ()) -> None:
        finished = time.time() if phase in (SUCCEEDED, FAILED) else None
        status = RunStatus(
            run_name=self.spec.run_name,
            model=self.spec.model,
            phase=phase,
            outputs=self.outputs,
            steps=self.phases,
            reason=reason,
            log_tail=log_tail,
            started_at=self.started_at,
            finished_at=finished,
        )
        atomic_write_json(self.run_dir / STATUS_FILE, status.to_dict())

    def finish(self, phase: str, reason: str | None = None, log_tail: tuple[str, ...] = ()) -> int:
        self.write(phase, reason, log_tail)
        print(f"run {self.spec.run_name}: {phase}{f' ({reason})' if reason else ''}", flush=True)
        return 0 if phase == SUCCEEDED else 1


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's group, SIGKILL it if it does not exit within the grace period."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STEP_KILL_GRACE)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live rank's group at once, SIGKILL what is left after the grace period."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        kill_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STEP_KILL_GRACE
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _rank_pid_file(rank: int) -> str:
    return STEP_PID_FILE if rank == 0 else f"step.rank{rank}.pid"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for MASTER_PORT; rank 0 binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exit_reason(step: str, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"step {step} was killed by {name}"
    return f"step {step} exited with code {code}"


def _read_outputs(step: str, outputs_path: Path, log_path: Path) -> dict[str, Any]:
    try:
        text = outputs_path.read_text()
    except FileNotFoundError:
        return {}  # a step without outputs is normal
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _StepFailed(f"step {step} wrote invalid JSON to its outputs file: {exc}", tail_lines(log_path)) from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise _StepFailed(f"step {step} outputs must be a JSON object, got {kind}", tail_lines(log_path))
    return data


def _fail_without_spec(run_dir: Path, reason: str) -> int:
    """The spec could not be loaded: still leave a terminal status so nobody waits forever."""
    raw = read_json(run_dir / SPEC_FILE) or {}
    now = time.time()
    status = RunStatus(
        run_name=str(raw.get("run_name", run_dir.name)),
        model=str(raw.get("model", "")),
        phase=FAILED,
        outputs={},
        steps={},
        reason=reason,
        started_at=now,
        finished_at=now,
    )
    atomic_write_json(run_dir / STATUS_FILE, status.to_dict())
    return 1


_LOCK_FD: int | None = None        # held for the runner's lifetime; the kernel drops it at exit


def _own(run_dir: Path) -> bool:
    """Take the run's lock: at most one runner per run, however many times it was started (a
    launcher resuming a claim whose submitter died may race the original one)."""
    global _LOCK_FD
    fd = os.open(run_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _LOCK_FD = fd
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m triggers.local_runner RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0]).resolve()
    if not _own(run_dir):
        return 0                                      # another runner already runs this run
    write_pid_file(run_dir / PID_FILE, os.getpid())  # next: lets the launcher tell "dead" from "slow"
    try:
        spec = LaunchSpec.from_dict(json.loads((run_dir / SPEC_FILE).read_text()))
    except Exception as exc:  # noqa: BLE001 - any bad spec must end as a Failed run, not a hang
        return _fail_without_spec(run_dir, f"invalid spec.json: {exc}")
    distributed = (read_json(run_dir / SPEC_FILE) or {}).get("distributed") or {}
    runner = _Runner(run_dir, spec, ranks=int(distributed.get("workers") or 1))
    signal.signal(signal.SIGTERM, runner.on_signal)
    signal.signal(signal.SIGINT, runner.on_signal)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
