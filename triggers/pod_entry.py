"""The entry point inside loopline's pods: `python -m triggers.pod_entry job|step`.

`job`  (Kubernetes Job launcher) runs the whole pipeline in this pod with the local
       runner (`triggers.local_runner`): same step order, `when`, placeholders, step
       timeouts and outputs as a local run. Step logs are echoed to stdout (so
       `kubectl logs` shows them) and the final status is written, as compact JSON, to
       the container's termination message, where the watcher reads it.
       Environment: LOOPLINE_RUN_NAME, LOOPLINE_MODEL, LOOPLINE_PIPELINE (JSON),
       LOOPLINE_RUN_ROOT, LOOPLINE_TERMINATION_LOG, plus the request's variables.

`step --step NAME [--input STEP=JSON ...]`  (Argo launcher) runs one step: fills its
       placeholders from the upstream outputs Argo passed in, runs its argv (never a
       shell) with LOOPLINE_INPUTS / LOOPLINE_OUTPUTS set, then writes the output
       parameters Argo collects: `outputs.json` and one `when-<task>` decision per
       downstream condition this step's outputs decide.
       Environment: LOOPLINE_PIPELINE_B64, LOOPLINE_ENV_B64 (optional), LOOPLINE_OUT_DIR.

`sweep-open --step NAME [--input ...]`, `sweep-trial --step NAME [--index I]`,
`sweep-close --step NAME`  (a sweep step on a cluster, triggers.sweep): open stores the
       upstream outputs on the study (Argo; the Job launcher's pipeline pod opens it itself),
       trial runs the trial of index I (default JOB_COMPLETION_INDEX, the Indexed Job's), close
       writes the best trial's outputs as `step` does. Environment as `step` or `job`, plus
       LOOPLINE_SWEEP_STORAGE (the study's RDB); only these modes import Optuna.

Stdlib only (plus triggers), like the local runner: pods start fast.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from triggers import conditions
from triggers.local_runner import (
    SPEC_FILE,
    STATUS_FILE,
    STEPS_DIR,
    _Runner,
    atomic_write_json,
    read_json,
    write_pid_file,
    PID_FILE,
)
from triggers.pipeline import FAILED, LaunchSpec, Pipeline, Step, UnknownOutputError, render_command, render_value
from triggers.render_workflow import escape_outputs

TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message


# --- job mode ---------------------------------------------------------------------


def run_job(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    run_name, model = env["LOOPLINE_RUN_NAME"], env["LOOPLINE_MODEL"]
    pipeline = Pipeline.from_dict(json.loads(env["LOOPLINE_PIPELINE"]))
    run_dir = Path(env.get("LOOPLINE_RUN_ROOT", "/var/run/loopline/runs")) / run_name
    (run_dir / STEPS_DIR).mkdir(parents=True, exist_ok=True)
    Path(env.get("LOOPLINE_STATE_DIR", "/var/run/loopline/state")).mkdir(parents=True, exist_ok=True)
    # The request's variables are this process's environment already: the runner passes it on.
    spec = LaunchSpec(run_name=run_name, model=model, pipeline=pipeline, env={}, workdir=os.getcwd())
    atomic_write_json(run_dir / SPEC_FILE, spec.to_dict())
    write_pid_file(run_dir / PID_FILE, os.getpid())
    runner = _Runner(run_dir, spec)
    signal.signal(signal.SIGTERM, runner.on_signal)
    signal.signal(signal.SIGINT, runner.on_signal)
    echo = _LogEcho(run_dir / STEPS_DIR)
    echo.start()
    try:
        code = runner.run()
    finally:
        echo.stop()
    status = read_json(run_dir / STATUS_FILE) or {"phase": FAILED, "reason": "runner wrote no status"}
    write_report(env.get("LOOPLINE_TERMINATION_LOG", "/dev/termination-log"), status)
    return code


def report_json(status: dict[str, Any]) -> str:
    """Compact status for the termination message; drops what does not fit in 4 KiB."""
    report = {key: status.get(key) for key in ("phase", "reason", "steps", "outputs", "started_at", "finished_at")}
    text = json.dumps(report, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_LIMIT:
        report["outputs"], report["truncated"] = {}, True
        text = json.dumps(report, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_LIMIT:
        report["reason"] = (report.get("reason") or "")[:512]
        report["steps"] = {}
        text = json.dumps(report, separators=(",", ":"))
    return text


def write_report(path: str, status: dict[str, Any]) -> None:
    try:
        Path(path).write_text(report_json(status))
    except OSError as exc:  # not in a pod (a test, a laptop): say so, the exit code still counts
        print(f"pod_entry: cannot write termination message to {path}: {exc}", file=sys.stderr)


class _LogEcho:
    """Copies steps/*.log to stdout as they grow, prefixed with the step name."""

    def __init__(self, steps_dir: Path, interval: float = 0.2) -> None:
        self.steps_dir, self.interval = steps_dir, interval
        self.offsets: dict[Path, int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="log-echo", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self._drain()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            self._drain()

    def _drain(self) -> None:
        for path in sorted(self.steps_dir.glob("*.log")):
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # whole lines only, the rest next time
            if self.stopped.is_set():
                cut = len(data)
            if cut:
                self.offsets[path] = offset + cut
                step = path.name[: -len(".log")]
                for line in data[:cut].decode("utf-8", errors="replace").splitlines():
                    sys.stdout.write(f"[{step}] {line}\n")
                sys.stdout.flush()


# --- step mode (Argo) ---------------------------------------------------------------


def _b64_json(value: str) -> Any:
    return json.loads(base64.b64decode(value.encode()).decode())


def run_step(step_name: str, inputs_args: list[str], env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    if env.get("LOOPLINE_ENV_B64"):
        env.update({str(k): str(v) for k, v in _b64_json(env.pop("LOOPLINE_ENV_B64")).items()})
    pipeline = Pipeline.from_dict(_b64_json(env.pop("LOOPLINE_PIPELINE_B64")))
    step = pipeline.step(step_name)
    out_dir = Path(env.get("LOOPLINE_OUT_DIR", "/tmp/loopline"))
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(env.get("LOOPLINE_STATE_DIR", out_dir / "state")).mkdir(parents=True, exist_ok=True)
    inputs = _parse_inputs(step_name, inputs_args)
    if isinstance(inputs, str):
        return _fail(inputs)
    try:
        argv = render_command(step, inputs)
    except UnknownOutputError as exc:
        return _fail(str(exc))
    raw_outputs = out_dir / "step-outputs.json"
    raw_outputs.unlink(missing_ok=True)
    env.update(step.env)
    env.update(LOOPLINE_STEP=step.name, LOOPLINE_OUTPUTS=str(raw_outputs), LOOPLINE_INPUTS=json.dumps(inputs),
               LOOPLINE_RUN_DIR=str(out_dir))
    print(f"step {step.name}: starting {list(argv)!r}", flush=True)
    try:
        proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return _fail(f"step {step.name} could not start: {exc}")
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        return _fail(f"step {step.name} exited with code {code}", code if code > 0 else 1)
    outputs: Any = {}
    if raw_outputs.exists():
        try:
            outputs = json.loads(raw_outputs.read_text())
        except ValueError as exc:
            return _fail(f"step {step.name} wrote invalid JSON to its outputs file: {exc}")
    if not isinstance(outputs, dict):
        return _fail(f"step {step.name} outputs must be a JSON object, got {type(outputs).__name__}")
    _publish(pipeline, step.name, outputs, out_dir)
    return 0


def _parse_inputs(step_name: str, items: list[str]) -> dict[str, Any] | str:
    """`--input STEP=JSON` arguments as {step: outputs}, or the reason one is not an object."""
    inputs: dict[str, Any] = {}
    for item in items:
        name, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return f"step {step_name}: input {name!r} is not a JSON object of outputs: {raw[:200]!r}"
        inputs[name] = value
    return inputs


def _publish(pipeline: Pipeline, step_name: str, outputs: dict[str, Any], out_dir: Path) -> None:
    """The output parameters Argo collects: outputs.json and the conditions this step decides."""
    # Argo pastes this into downstream args, which the kubelet $(VAR)-expands: escape `$`.
    (out_dir / "outputs.json").write_text(escape_outputs(json.dumps(outputs, separators=(",", ":"))))
    for task in pipeline.order():
        if task.when is not None:
            cond = conditions.parse(task.when)
            if cond.step == step_name:
                decision = cond.evaluate({step_name: outputs})
                (out_dir / f"when-{task.name}").write_text(render_value(decision))
    print(f"step {step_name}: succeeded, outputs {sorted(outputs)}", flush=True)


# --- sweep modes (a sweep step's trials as pods) --------------------------------------

OPEN_TIMEOUT = 3600.0  # a Job launcher's trial pod waits this long for its pipeline pod to open the sweep


def run_sweep_phase(phase: str, step_name: str, inputs_args: list[str], index: int | None,
                    env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    if env.get("LOOPLINE_ENV_B64"):
        env.update({str(k): str(v) for k, v in _b64_json(env.pop("LOOPLINE_ENV_B64")).items()})
    encoded = env.pop("LOOPLINE_PIPELINE_B64", None)
    pipeline = Pipeline.from_dict(_b64_json(encoded) if encoded else json.loads(env["LOOPLINE_PIPELINE"]))
    step = pipeline.step(step_name)
    if step.sweep is None:
        return _fail(f"step {step_name} is not a sweep step")
    out_dir = Path(env.get("LOOPLINE_OUT_DIR", "/tmp/loopline"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env.update(step.env)
    env.update(LOOPLINE_STEP=step.name, LOOPLINE_RUN_DIR=str(out_dir),
               LOOPLINE_OUTPUTS=str(out_dir / "step-outputs.json"))   # each trial gets its own
    from triggers import sweep   # Optuna and an RDB driver: only a sweep's pods pay for them

    try:
        study = sweep.pod_sweep(step.name, step.sweep, env, out_dir, step.timeout_seconds)
        if phase == "open":
            inputs = _parse_inputs(step_name, inputs_args)
            if isinstance(inputs, str):
                return _fail(inputs)
            study.open(inputs)
            return 0
        if phase == "close":
            _publish(pipeline, step.name, study.close(), out_dir)
            return 0
        return _run_trial(study, step, env, out_dir, index)
    except sweep.SweepFailed as failure:
        return _fail(failure.reason)


def _run_trial(study: Any, step: Step, env: dict[str, str], out_dir: Path, index: int | None) -> int:
    if index is None:
        return _fail(f"step {step.name}: sweep-trial needs --index or JOB_COMPLETION_INDEX")
    inputs = study.wait_open(float(env.get("LOOPLINE_SWEEP_OPEN_TIMEOUT", OPEN_TIMEOUT)))
    if inputs is None:
        print(f"sweep {step.name}: never opened (its pipeline pod ended first); index {index} runs nothing",
              flush=True)
        return 0
    try:
        study.argv = render_command(step, inputs)
    except UnknownOutputError as exc:
        return _fail(str(exc))
    study.env["LOOPLINE_INPUTS"] = json.dumps(inputs)
    echo = _LogEcho(out_dir)          # the trial's log, as `kubectl logs` of this pod
    echo.start()
    try:
        return study.run_index(index)
    finally:
        echo.stop()


def _fail(reason: str, code: int = 1) -> int:
    print(reason, file=sys.stderr, flush=True)
    try:
        Path(os.environ.get("LOOPLINE_TERMINATION_LOG", "/dev/termination-log")).write_text(reason[:TERMINATION_LIMIT])
    except OSError:
        pass
    return code


def _completion_index() -> int | None:
    """The index Kubernetes gives each pod of an Indexed Job."""
    value = os.environ.get("JOB_COMPLETION_INDEX", "")
    return int(value) if value.isdigit() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triggers.pod_entry")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("job", help="run the whole pipeline (Kubernetes Job)")
    step = sub.add_parser("step", help="run one step (Argo Workflow task)")
    step.add_argument("--step", required=True)
    step.add_argument("--input", action="append", default=[], metavar="STEP=JSON")
    for phase, what in (("open", "open a sweep step's study to its trial pods (Argo)"),
                        ("trial", "run one trial of a sweep step (a trial pod)"),
                        ("close", "the best trial's outputs as the sweep step's (Argo)")):
        mode = sub.add_parser(f"sweep-{phase}", help=what)
        mode.add_argument("--step", required=True)
        if phase == "open":
            mode.add_argument("--input", action="append", default=[], metavar="STEP=JSON")
        if phase == "trial":
            mode.add_argument("--index", type=int, default=_completion_index())
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.mode.startswith("sweep-"):
        code = run_sweep_phase(args.mode[len("sweep-"):], args.step, getattr(args, "input", []),
                               getattr(args, "index", None))
    else:
        code = run_job() if args.mode == "job" else run_step(args.step, args.input)
    print(f"pod_entry {args.mode}: exit {code} after {time.monotonic() - started:.1f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
