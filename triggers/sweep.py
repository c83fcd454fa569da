"""The sweep coordinator: one Optuna study per training request, trials as the step's own processes.

A step with `sweep:` (loopline.config.SweepConfig) is not run once: the local runner hands it to
`run_sweep`, which asks the study for parameters and starts the step's command once per trial,
at most `parallelism` at a time, each trial a process in its own group with

    LOOPLINE_PARAM_<NAME>       the trial's value of each parameter of the space
    LOOPLINE_TRIAL_NUMBER       the Optuna trial number
    LOOPLINE_SWEEP_STORAGE      where the study lives (a journal file path or an RDB URL)
    LOOPLINE_SWEEP_STUDY        the study's name: <model>.<step>.<idempotency key>
    LOOPLINE_SWEEP_OBJECTIVE    the metric the study optimises
    LOOPLINE_SWEEP_PARENT_RUN_ID  the sweep's MLflow parent run (stepkit nests the trial's run)
    LOOPLINE_SWEEP_FD           a socket to this coordinator: stepkit's ctx.report() sends each
                                intermediate value, the coordinator records it on the trial and
                                answers whether the pruner stops it (so the step itself needs
                                no Optuna and no storage driver)
    LOOPLINE_OUTPUTS            steps/<step>.trial<N>.outputs.json (log: steps/<step>.trial<N>.log)

and tells the study the result (ask/tell): exit 0 with `{"pruned": true}` is PRUNED; exit 0 with
the objective among `candidate_metrics` (or a top-level output of that name) is COMPLETE; anything
else (a non-zero exit, a signal, no objective) is FAIL. A trial whose process died is re-enqueued
with the same parameters (`study.enqueue_trial`) while at most `max_failed_trials` failed; beyond
that the step fails. No trial is ever left RUNNING: trials RUNNING in the storage when a
coordinator starts (its predecessor died) are failed and re-enqueued first, and a cancel fails and
re-enqueues the ones it stops. The installed Optuna's JournalStorage has no heartbeat
(`BaseHeartbeat` is RDBStorage's only), which is why the retry lives here and not in
`RetryFailedTrialCallback`.

Storage: `LOOPLINE_SWEEP_STORAGE` (an SQLAlchemy URL, e.g. the MLflow PostgreSQL) if set, else a
JournalStorage file `<state dir>/sweeps/<study>.journal` (JournalFileBackend locks the file, so
parallel processes are safe on one machine; SQLite is not, optuna#820). The study is created with
load_if_exists, so a relaunch of the same request continues it: the trial numbers go on, finished
trials are not run again.

The step's outputs are the best trial's (`candidate_version`, `candidate_metrics`, ...) plus the
sweep's summary, so the gate judges the best trial.

On a cluster the trials are pods, one trial per index (`python -m triggers.pod_entry sweep-trial`):
the Job launcher's trial Indexed Job (JOB_COMPLETION_INDEX, backoffLimitPerIndex), or an Argo
fan-out (`withSequence`, retryStrategy). The study must then live in an RDB every pod reaches
(`LOOPLINE_SWEEP_STORAGE`). Three phases share this module's code:

    open    the upstream outputs and the MLflow parent run are stored on the study (attributes
            `inputs`, `parent_run_id`, `open`); trial pods wait for it
    trial   the index's trial, once: an index whose trial already settled does nothing; a RUNNING
            trial of the index (its previous pod died) is failed and its params re-enqueued first;
            the pod exits 1 only when the trial's process died, so the orchestrator retries the
            index and the retry runs the re-enqueued params
    close   every index has settled (Argo: the fan-out ended; Job launcher: the pipeline pod
            waits for it in the study): the best trial's outputs, or the failure
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from triggers.render_job import SWEEP_PODS_ENV

STORAGE_ENV = "LOOPLINE_SWEEP_STORAGE"
TAG_SWEEP = "loopline.sweep"       # on the parent run: the study name
TAG_TRIAL = "loopline.trial"       # on each child run: the trial number (set by stepkit)
_POLL = 0.02
_POD_POLL = 1.0                    # a pod reads the shared study this often (an RDB round trip)
_KILL_GRACE = 3.0
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SweepFailed(Exception):
    def __init__(self, reason: str, log_path: Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_path = log_path


@dataclass
class _Trial:
    trial: optuna.Trial
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    outputs: Path
    log: Path
    thread: threading.Thread | None = None
    params: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    timed_out: bool = False


def distributions(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "int":
            out[name] = optuna.distributions.IntDistribution(int(spec["low"]), int(spec["high"]),
                                                             log=bool(spec.get("log")))
        elif kind == "float":
            out[name] = optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]),
                                                               log=bool(spec.get("log")))
        else:
            out[name] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
    return out


def study_name(model: str, step: str, key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}.{step}.{key}")[:200]


def storage_for(env: Mapping[str, str], run_dir: Path, name: str) -> tuple[Any, str]:
    """(the storage object, what the trials are told it is)."""
    url = env.get(STORAGE_ENV)
    if url:
        return rdb_storage(url), url
    from optuna.storages.journal import JournalFileBackend

    state = Path(env.get("LOOPLINE_STATE_DIR") or run_dir.parent.parent)
    path = state / "sweeps" / f"{name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path))), str(path)


def rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage, which creates its tables on first use: pods that start together on a
    fresh database race there (a duplicate CREATE TYPE or TABLE), and the losers try again."""
    import sqlalchemy.exc

    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def run_sweep(step_name: str, sweep: Mapping[str, Any], argv: tuple[str, ...], env: Mapping[str, str],
              workdir: str, steps_dir: Path, run_dir: Path, cancelled: Callable[[], bool],
              timeout: float | None = None) -> dict[str, Any]:
    """Run the sweep to its budget; the step's outputs (the best trial's plus a summary).

    In a Job launcher's pipeline pod (SWEEP_PODS_ENV=pods) the trials are the trial Job's pods:
    the sweep is opened for them and awaited. `timeout` (the step's timeout_seconds) bounds each
    trial, as it bounds the command of any step: a trial past it is killed and FAILs, not retried."""
    sweep_ = _Sweep(step_name, sweep, argv, env, workdir, steps_dir, run_dir, cancelled, timeout)
    if env.get(SWEEP_PODS_ENV) == "pods":
        sweep_.open(json.loads(env.get("LOOPLINE_INPUTS") or "{}"))
        return sweep_.await_pods()
    return sweep_.run()


def pod_sweep(step_name: str, sweep: Mapping[str, Any], env: Mapping[str, str], out_dir: Path,
              timeout: float | None = None) -> "_Sweep":
    """The sweep as a cluster pod sees it (pod_entry's sweep-open / sweep-trial / sweep-close)."""
    if not env.get(STORAGE_ENV):
        raise SweepFailed(f"sweep {step_name}: trials on a cluster share their study through an RDB: set "
                          f"{STORAGE_ENV} (e.g. the MLflow PostgreSQL URL) in the pods' environment "
                          "(pipeline.kubernetes.env_from_secrets, or the step's env)")
    return _Sweep(step_name, sweep, (), env, os.getcwd(), out_dir, out_dir, lambda: False, timeout)


class _Sweep:
    def __init__(self, step_name: str, sweep: Mapping[str, Any], argv: tuple[str, ...], env: Mapping[str, str],
                 workdir: str, steps_dir: Path, run_dir: Path, cancelled: Callable[[], bool],
                 timeout: float | None = None) -> None:
        self.step, self.cfg, self.argv, self.env = step_name, dict(sweep), argv, dict(env)
        self.workdir, self.steps_dir, self.cancelled = workdir, steps_dir, cancelled
        self.timeout = timeout
        key = env.get("LOOPLINE_IDEMPOTENCY_KEY") or env.get("LOOPLINE_RUN_NAME") or run_dir.name
        self.name = study_name(env.get("LOOPLINE_MODEL", ""), step_name, key)
        storage, self.storage_label = storage_for(env, run_dir, self.name)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if self.cfg.get("pruner", "median") == "median" else optuna.pruners.NopPruner())
        self.study = optuna.create_study(
            storage=storage, study_name=self.name, direction=self.cfg.get("direction", "maximize"),
            pruner=pruner, sampler=optuna.samplers.TPESampler(seed=self.cfg.get("seed")), load_if_exists=True)
        self.space = distributions(self.cfg["space"])
        self.budget = int(self.cfg["trials"])
        self.parallelism = int(self.cfg.get("parallelism", 1))
        self.max_failed = int(self.cfg.get("max_failed_trials", 3))
        self.objective = str(self.cfg["objective"])
        self.running: dict[int, _Trial] = {}
        self.last_failure: tuple[str, Path | None] = ("", None)
        self.parent_run_id: str | None = None

    # -- counting ------------------------------------------------------------------------

    def count(self, *states: optuna.trial.TrialState) -> int:
        return len(self.study.get_trials(deepcopy=False, states=states))

    def finished(self) -> int:
        return self.count(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.recover_orphans()
        self.parent_run_id = self.parent_run()
        try:
            while True:
                if self.cancelled():
                    self.stop_all("cancelled")
                    raise SweepFailed("cancelled")
                self.reap()
                failure = self.too_many_failures()
                if failure is not None:
                    self.stop_all("the sweep failed")
                    raise failure
                done = self.finished()
                if done >= self.budget and not self.running:
                    break
                while len(self.running) < self.parallelism and done + len(self.running) < self.budget:
                    self.start(self.study.ask(self.space))
                time.sleep(_POLL)
        except BaseException:
            self.end_parent("FAILED")
            raise
        outputs = self.result()
        self.end_parent("FINISHED", outputs)
        return outputs

    def recover_orphans(self) -> None:
        """Trials RUNNING in the storage belong to a coordinator that died: fail and re-enqueue them."""
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    def start(self, trial: optuna.Trial) -> None:
        number = trial.number
        params = {name: trial.params[name] for name in self.space}
        outputs = self.steps_dir / f"{self.step}.trial{number}.outputs.json"
        log_path = self.steps_dir / f"{self.step}.trial{number}.log"
        outputs.unlink(missing_ok=True)
        ours, theirs = socket.socketpair()
        env = dict(self.env)
        env.update({f"LOOPLINE_PARAM_{name.upper()}": _env_value(value) for name, value in params.items()})
        env.update(LOOPLINE_TRIAL_NUMBER=str(number), LOOPLINE_SWEEP_STUDY=self.name,
                   LOOPLINE_SWEEP_STORAGE=self.storage_label, LOOPLINE_SWEEP_OBJECTIVE=self.objective,
                   LOOPLINE_SWEEP_FD=str(theirs.fileno()), LOOPLINE_OUTPUTS=str(outputs))
        if self.parent_run_id:
            env["LOOPLINE_SWEEP_PARENT_RUN_ID"] = self.parent_run_id
        try:
            with log_path.open("ab") as log:
                proc = subprocess.Popen(self.argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        close_fds=True, pass_fds=(theirs.fileno(),))
        except OSError as exc:
            ours.close()
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise SweepFailed(f"sweep {self.step}: trial {number} could not start: {exc}") from None
        finally:
            theirs.close()
        running = _Trial(trial, proc, ours, outputs, log_path, params=params)
        running.thread = threading.Thread(target=_serve_reports, args=(running,), daemon=True)
        running.thread.start()
        self.running[number] = running
        print(f"sweep {self.step}: trial {number} started {params}", flush=True)

    def reap(self) -> None:
        for number, running in list(self.running.items()):
            code = running.proc.poll()
            if code is None and self.timeout is not None and time.monotonic() - running.started > self.timeout:
                running.timed_out = True
                _killpg(running.proc.pid, signal.SIGKILL)
                code = running.proc.wait()
            if code is None:
                continue
            del self.running[number]
            _killpg(running.proc.pid, signal.SIGKILL)       # whatever the trial left in its group
            running.sock.close()
            if running.thread is not None:
                running.thread.join(timeout=5)
            self.settle(running, code)

    def settle(self, running: _Trial, code: int) -> None:
        trial, number = running.trial, running.trial.number
        outputs = _read_json(running.outputs)
        if code == 0 and outputs.get("pruned") is True:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"sweep {self.step}: trial {number} pruned", flush=True)
            return
        value = _objective(outputs, self.objective) if code == 0 else None
        if value is not None:
            trial.set_user_attr("outputs", outputs)
            self.study.tell(trial, value)
            print(f"sweep {self.step}: trial {number} complete: {self.objective}={value}", flush=True)
            return
        if running.timed_out:
            reason = f"DeadlineExceeded: trial {number} ran past {self.timeout:g}s"
        elif code != 0:
            reason = _exit_reason(number, code)
        else:
            reason = f"trial {number} reported no {self.objective!r} (candidate_metrics or an output)"
        crashed = code != 0 and not running.timed_out       # a retry might finish it
        trial.set_user_attr("failure", reason)
        trial.set_user_attr("crashed", crashed)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.last_failure = (reason, running.log)
        self.close_child_run(number)
        print(f"sweep {self.step}: {reason}", flush=True)
        if crashed and self.count(optuna.trial.TrialState.FAIL) <= self.max_failed:
            # the process died (a crash, a kill): the same parameters get another go
            self.study.enqueue_trial(running.params, user_attrs={"retry_of": number})

    def stop_all(self, why: str) -> None:
        """Stop every running trial; each is failed and re-enqueued (a relaunch runs it again)."""
        for running in self.running.values():
            _killpg(running.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + _KILL_GRACE
        for number, running in list(self.running.items()):
            try:
                running.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()
            _killpg(running.proc.pid, signal.SIGKILL)
            running.sock.close()
            self.study.tell(running.trial, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(running.params, user_attrs={"retry_of": number})
            self.close_child_run(number)
            print(f"sweep {self.step}: trial {number} stopped ({why})", flush=True)
        self.running.clear()

    def too_many_failures(self) -> SweepFailed | None:
        failed = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if len(failed) <= self.max_failed:
            return None
        reason, log = self.last_failure
        reason = reason or str(failed[-1].user_attrs.get("failure") or "")
        return SweepFailed(f"sweep {self.step}: {len(failed)} trials failed (max_failed_trials "
                           f"{self.max_failed}){'; last: ' + reason if reason else ''}", log)

    # -- on a cluster: the trials are pods, one trial per index -------------------------------

    def open(self, inputs: Mapping[str, Any]) -> None:
        """Make the study ready for the trial pods: the upstream outputs they fill the command's
        placeholders from, and the MLflow parent run their runs nest under."""
        attrs = self.study.user_attrs
        parent = attrs.get("parent_run_id") or self.parent_run()
        self.study.set_user_attr("inputs", dict(inputs))
        self.study.set_user_attr("parent_run_id", parent)
        self.study.set_user_attr("open", True)
        self.parent_run_id = parent
        print(f"sweep {self.step}: open for {self.budget} trial pods ({self.parallelism} at a time)", flush=True)

    def settled(self) -> int:
        """Indexes done for good: complete, pruned, or failed for a reason a retry would not change."""
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=_FINISHED)
                   if "index" in t.user_attrs and not t.user_attrs.get("crashed"))

    def await_pods(self) -> dict[str, Any]:
        """The Job launcher's pipeline pod: wait until every index of the trial Job has settled."""
        try:
            while self.settled() < self.budget:
                if self.cancelled():
                    raise SweepFailed("cancelled")
                failure = self.too_many_failures()
                if failure is not None:
                    raise failure
                time.sleep(_POD_POLL)
        except BaseException:
            self.end_parent("FAILED")
            raise
        return self.close()

    def wait_open(self, timeout: float) -> dict[str, Any] | None:
        """A trial pod of the Job launcher starts with the pipeline pod: wait for the sweep to open."""
        deadline = time.monotonic() + timeout
        while True:
            attrs = self.study.user_attrs
            if attrs.get("open"):
                self.parent_run_id = attrs.get("parent_run_id")
                return dict(attrs.get("inputs") or {})
            if time.monotonic() > deadline:
                return None
            time.sleep(_POD_POLL)

    def run_index(self, index: int) -> int:
        """One trial pod: the trial of `index`, once. 0 when the index has settled (now or before);
        1 when the trial's process died: the orchestrator retries the index, and the retry runs the
        re-enqueued parameters (this pod or another index's, whichever asks first)."""
        for old in self.study.get_trials(deepcopy=False):
            if old.user_attrs.get("index") != index:
                continue
            if old.state == optuna.trial.TrialState.RUNNING:      # this index's previous pod died
                trial = optuna.Trial(self.study, old._trial_id)
                trial.set_user_attr("crashed", True)
                trial.set_user_attr("failure", f"trial {old.number}: its pod died")
                self.study.tell(old.number, state=optuna.trial.TrialState.FAIL)
                self.close_child_run(old.number)
                if self.count(optuna.trial.TrialState.FAIL) <= self.max_failed:
                    self.study.enqueue_trial(old.params, user_attrs={"retry_of": old.number})
                print(f"sweep {self.step}: trial {old.number} of index {index} lost its pod", flush=True)
            elif old.state in _FINISHED and not old.user_attrs.get("crashed"):
                print(f"sweep {self.step}: index {index} settled already (trial {old.number})", flush=True)
                return 0
        if self.too_many_failures() is not None:
            print(f"sweep {self.step}: index {index} starts nothing: the sweep has failed", flush=True)
            return 0
        trial = self.study.ask(self.space)
        trial.set_user_attr("index", index)
        self.start(trial)
        running = self.running[trial.number]
        while self.running:
            self.reap()
            time.sleep(_POLL)
        return 1 if running.proc.returncode != 0 and not running.timed_out else 0

    def close(self) -> dict[str, Any]:
        """Every index has ended: the best trial's outputs. A trial still RUNNING lost its pod for good."""
        for old in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.Trial(self.study, old._trial_id)
            trial.set_user_attr("failure", f"trial {old.number}: its pod died and was not retried")
            self.study.tell(old.number, state=optuna.trial.TrialState.FAIL)
        self.parent_run_id = self.parent_run_id or self.study.user_attrs.get("parent_run_id")
        try:
            failure = self.too_many_failures()
            if failure is not None:
                raise failure
            outputs = self.result()
        except BaseException:
            self.end_parent("FAILED")
            raise
        self.end_parent("FINISHED", outputs)
        return outputs

    def result(self) -> dict[str, Any]:
        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise SweepFailed(f"sweep {self.step}: no trial completed ({self.finished()} pruned)")
        best = self.study.best_trial
        trial_outputs = dict(best.user_attrs.get("outputs") or {})
        version = trial_outputs.get("candidate_version") or trial_outputs.get("model_version")
        metrics = trial_outputs.get("candidate_metrics") or {self.objective: best.value}
        return {**trial_outputs, "candidate_version": version, "candidate_metrics": metrics,
                "best_trial": best.number, "best_params": best.params, "best_value": best.value,
                "study": self.name, "storage": self.storage_label, "parent_run_id": self.parent_run_id,
                "trials": {"complete": len(complete),
                           "pruned": self.count(optuna.trial.TrialState.PRUNED),
                           "failed": self.count(optuna.trial.TrialState.FAIL)}}

    # -- MLflow ---------------------------------------------------------------------------

    def _client(self) -> Any:
        import mlflow

        if self.env.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(self.env["MLFLOW_TRACKING_URI"])
        return mlflow.MlflowClient()

    def parent_run(self) -> str | None:
        """The sweep's parent run, created here explicitly (not by a callback, optuna#5148);
        a resumed sweep finds and reuses its own. None without MLflow settings in the env."""
        if not (self.env.get("MLFLOW_TRACKING_URI") and self.env.get("LOOPLINE_STATE_DIR")):
            return None
        from stepkit import job

        ctx = job.context(self.env)
        client = self._client()
        experiment = ctx.experiment_id()
        found = client.search_runs([experiment], filter_string=f"tags.`{TAG_SWEEP}` = '{self.name}'",
                                   max_results=1)
        if found:
            return str(found[0].info.run_id)
        tags = {**ctx.run_tags(), TAG_SWEEP: self.name}
        return str(client.create_run(experiment, run_name=f"{ctx.run_name}-{self.step}", tags=tags).info.run_id)

    def close_child_run(self, number: int) -> None:
        """A killed trial's MLflow run would stay RUNNING forever: end it as KILLED."""
        if not self.parent_run_id:
            return
        client = self._client()
        experiment = client.get_run(self.parent_run_id).info.experiment_id
        for run in client.search_runs(
                [experiment], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                                            f"tags.`{TAG_TRIAL}` = '{number}' and attributes.status = 'RUNNING'"):
            client.set_terminated(run.info.run_id, status="KILLED")

    def end_parent(self, status: str, outputs: Mapping[str, Any] | None = None) -> None:
        if not self.parent_run_id:
            return
        client = self._client()
        if outputs:
            for name, value in (outputs.get("best_params") or {}).items():
                client.set_tag(self.parent_run_id, f"best_param.{name}", str(value))
            client.log_metric(self.parent_run_id, f"best_{self.objective}", float(outputs["best_value"]))
            client.set_tag(self.parent_run_id, "loopline.best_trial", str(outputs["best_trial"]))
        client.set_terminated(self.parent_run_id, status=status)


def _serve_reports(running: _Trial) -> None:
    """One line per ctx.report(): {"step": s, "value": v} -> record it; answer {"prune": bool}."""
    try:
        stream = running.sock.makefile("rwb")
        for line in stream:
            try:
                message = json.loads(line)
                running.trial.report(float(message["value"]), int(message["step"]))
                answer = {"prune": bool(running.trial.should_prune())}
            except Exception as exc:  # noqa: BLE001 - a bad report must not kill the coordinator
                answer = {"prune": False, "error": str(exc)}
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()
    except (OSError, ValueError):
        pass                                            # the trial ended (or was stopped)


def _objective(outputs: Mapping[str, Any], name: str) -> float | None:
    metrics = outputs.get("candidate_metrics")
    value = metrics.get(name) if isinstance(metrics, Mapping) else None
    value = outputs.get(name) if value is None else value
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _exit_reason(number: int, code: int) -> str:
    if code < 0:
        try:
            return f"trial {number} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"trial {number} was killed by signal {-code}"
    return f"trial {number} exited with code {code}"


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
