"""`loopline demo`: the whole loop on one machine, live, ending with a summary.

It starts the real parts as separate processes (the embedded Tansu broker, the Faust worker,
the serving endpoint; MLflow is a SQLite store with an artifact folder), streams the example
data set in batches (its concept changes part-way), and shows what the loop does with them as
it happens, read from the topics. The summary is rebuilt from the events alone.

Every batch is also drift-checked against the champion's reference data: when the concept
changes (batch 4 shifts f5), the drift monitor publishes drift.detected with a link to its
Evidently report, and the trigger retrains on the new data (reason "drift").
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devstack.observe import Observer
from devstack.stack import REPO, LocalStack, Process
from loopline.commands.render import short_type
from streams import events as ev
from streams.codec import Decoded, build
from streams.describe import describe
from streams.publisher import Publisher

MODEL = "classifier"
FAMILY = "region"                           # a family of loopline.yaml: README "Model families"
FAMILY_KEYS = ("north", "south", "east", "west")
OUTCOME_TYPES = {ev.DeploymentDone.TYPE, ev.DeploymentRefused.TYPE, ev.TrainingFailed.TYPE}
PIPED_WIDTH = 240          # wide enough for a version row with a long rejection reason


def make_console(file=None) -> Console:
    """A terminal's width on a terminal; elsewhere (a CI log, `| tee`) COLUMNS if set, else a wide
    one: rich would fall back to 80 columns, and the versions table would wrap every row."""
    console = Console(file=file)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PIPED_WIDTH
    return console


console = make_console()


def event_line(data: ev.EventData) -> str:
    """The event's description as rich markup: escaped, with an evaluation's verdict coloured."""
    line = escape(describe(data))
    if isinstance(data, ev.ModelEvaluated):
        verdict, colour = ("passed", "green") if data.passed else ("rejected", "red")
        line = line.replace(verdict, f"[{colour}]{verdict}[/]", 1)
    return line


def report_links(tracking_uri: str):
    """`runs:/RUN/path` → the file the tracking store keeps it in (a link a terminal can open)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)

    def link(uri: str | None) -> str:
        if not uri or not uri.startswith("runs:/"):
            return uri or "-"
        run_id, _, path = uri[len("runs:/"):].partition("/")
        try:
            return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
        except Exception:  # noqa: BLE001 - the runs:/ URI is still a valid answer
            return uri
    return link


class Printer:
    """Prints each new event once, as it lands on the bus."""

    def __init__(self, observer: Observer, started: float, link=None):
        self.observer, self.started, self.shown = observer, started, 0
        self.link = link or (lambda uri: uri)

    def flush(self) -> None:
        with self.observer.cond:
            new = self.observer.events[self.shown:]
            self.shown = len(self.observer.events)
        for d in sorted(new, key=lambda d: d.event.time):   # topics interleave; time orders them
            if d.event.type == ev.ClockTicked.TYPE:
                continue
            member = f"[magenta]{escape(d.event.subject)}[/] " if d.event.subject != MODEL else ""
            console.print(f"[dim]{time.time() - self.started:6.1f}s[/] "
                          f"[bold cyan]{short_type(d.event.type):22}[/] {member}{event_line(d.data)}")
            if isinstance(d.data, ev.DriftDetected):
                console.print(f"{'':30}drift report: [link]{self.link(d.data.report_uri)}[/]")


def run_demo(batches: int = 10, rows: int = 1000, state_dir: str = ".loopline/demo",
             keep: bool = False, config: Path | None = None, family_members: int = 3) -> int:
    from examples.classifier.data import batch, write_batch

    state = Path(state_dir).resolve()
    if state.exists() and not keep:
        shutil.rmtree(state)
    (state / "data").mkdir(parents=True, exist_ok=True)
    started = time.time()
    console.rule("[bold]loopline demo")
    with console.status("starting broker, worker and serving endpoint..."):
        stack = LocalStack(state, config or REPO / "loopline.yaml", serving=True)
        try:
            stack.start()
        except BaseException:
            stack.__exit__(None, None, None)
            raise
    with stack:
        observer, worker = stack.observer, stack.worker
        console.print(f"broker      {stack.bootstrap} (Tansu, in memory)")
        console.print(f"mlflow      {stack.settings.tracking_uri}")
        console.print(f"serving     http://127.0.0.1:{stack.serve_port}")
        console.print(f"logs        {state}/*.log")
        console.print(f"worker ready after {time.time() - started:.1f}s; streaming {batches} batches "
                      f"of {rows} rows (the concept changes at batch 4)\n")
        link = report_links(stack.settings.tracking_uri)
        printer = Printer(observer, started, link)
        web = int(worker.env["LOOPLINE_WEB_PORT"])
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            for index in range(batches):
                info = write_batch(index, state / "data", rows=rows)
                event = build(ev.DataArrived(uri=info["uri"], rows=info["rows"], version=info["version"],
                                             digest=info["digest"], columns=info["schema"]),
                              MODEL, source="loopline/demo")
                publisher.publish(event)
                _wait_drift_check(web, index + 1, worker, printer)
                _wait_outcome(observer, event.id, worker, printer)
        members = _family_act(stack, state / "data", family_members, rows, printer)
        printer.flush()
        answer = _ask_serving(stack.serve_port, batch(batches - 1, rows=3).drop(columns=["label"]),
                              observer, stack.serving)
        _summary(observer, answer, time.time() - started, _drift_stats(web), link)
        if members:
            console.print(family_table(observer, members))
        _look_further(stack.settings.tracking_uri, batches)
        promoted = observer.of_type(ev.DeploymentDone.TYPE, MODEL)
        members_ok = all(observer.of_type(ev.DeploymentDone.TYPE, m) for m in members)
        return 0 if promoted and answer.get("version") == promoted[-1].data.version and members_ok else 1


def _family_act(stack: LocalStack, data_dir: Path, count: int, rows: int, printer: Printer) -> list[str]:
    """One batch for each of `count` members of the family in loopline.yaml: nothing registers
    them; each comes into being with its event and trains, is gated and deploys on its own."""
    from examples.classifier.data import write_batch

    names = [f"{FAMILY}.{key}" for key in FAMILY_KEYS[:count]]
    if not names:
        return []
    console.print(f"\n[bold]family {FAMILY}[/]: one batch each for {', '.join(names)} "
                  "(members made by their first event)\n")
    events = []
    with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
        for index, name in enumerate(names):
            info = write_batch(index, data_dir / name, rows=rows)
            event = build(ev.DataArrived(uri=info["uri"], rows=info["rows"], version=info["version"],
                                         digest=info["digest"], columns=info["schema"]),
                          name, source="loopline/demo")
            publisher.publish(event)
            events.append(event)
    for event in events:
        _wait_outcome(stack.observer, event.id, stack.worker, printer, timeout=240.0)
    return names


def family_table(observer: Observer, members: list[str]) -> Table:
    """Per member: its versions, the newest one's score and verdict, its champion, and the time
    from its data's arrival to its deployment."""
    table = Table(title=f"Family {FAMILY}")
    for column in ("member", "versions", "accuracy", "verdict", "champion", "data → deployed"):
        table.add_column(column)
    for name in members:
        evaluated = observer.of_type(ev.ModelEvaluated.TYPE, name)
        deployed = observer.of_type(ev.DeploymentDone.TYPE, name)
        arrived = observer.of_type(ev.DataArrived.TYPE, name)
        last = evaluated[-1].data if evaluated else None
        latency = (f"{deployed[-1].event.timestamp - arrived[0].event.timestamp:.1f}s"
                   if deployed and arrived else "-")
        table.add_row(name, str(len(evaluated)),
                      f"{last.candidate_metrics.get(last.metric) or 0:.3f}" if last else "-",
                      ("[green]promoted[/]" if last.passed else "[red]rejected[/]") if last else "-",
                      f"v{deployed[-1].data.version}" if deployed else "-", latency)
    return table


def _look_further(tracking_uri: str, batches: int) -> None:
    """The last lines: where to look at what the demo did. Its broker held the events in memory and
    stops with it, so the page needs a stack that stays up: `loopline dev`, fed the same data."""
    console.print(f"\nSee the runs: [bold]mlflow ui --backend-store-uri {tracking_uri}[/]")
    console.print("See it on the page (timeline, why / why not, lineage): this demo's broker kept the "
                  "events in memory and has stopped, so keep a stack up and stream the same batches into it:")
    console.print(f"  [bold]loopline dev --demo-batches {batches}[/]    then open http://127.0.0.1:8090 "
                  "(Ctrl-C stops it; state in .loopline/dev)")


def _drift_stats(web_port: int) -> dict:
    """The worker's drift-check counts for the demo model (GET /loopline/monitoring)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/loopline/monitoring",
                                    timeout=5) as response:
            return json.loads(response.read()).get(MODEL, {}).get("drift", {})
    except (OSError, ValueError):
        return {}


def _wait_drift_check(web_port: int, checks: int, worker: Process, printer: Printer,
                      timeout: float = 60.0) -> None:
    """Wait until the drift monitor has checked `checks` batches (a clean one publishes nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        printer.flush()
        worker.check()
        stats = _drift_stats(web_port)
        if sum(stats.get(k, 0) for k in ("clean", "drifted", "skipped", "failed")) >= checks:
            return
        time.sleep(0.1)


def _wait_outcome(observer: Observer, event_id: str, worker: Process, printer: Printer,
                  quiet: float = 0.5, timeout: float = 120.0) -> None:
    """Wait until the chain this batch started (if any) ends: deployed, rejected or failed."""
    deadline = time.monotonic() + timeout
    quiet_until = time.monotonic() + quiet
    while time.monotonic() < deadline:
        printer.flush()
        worker.check()
        chain = [d for d in list(observer.events) if d.event.correlationid == event_id]
        requested = any(d.event.type == ev.TrainingRequested.TYPE for d in chain)
        if not requested and time.monotonic() > quiet_until:
            return                                   # below the policy's threshold: no training
        if any(d.event.type in OUTCOME_TYPES or
               (d.event.type == ev.ModelEvaluated.TYPE and not d.data.passed) for d in chain):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the loop started by event {event_id} did not finish in {timeout}s")


def _ask_serving(port: int, rows, observer: Observer, serving: Process, timeout: float = 30.0) -> dict:
    """Ask the endpoint until it answers with the champion the last deployment named."""
    deployed = observer.of_type(ev.DeploymentDone.TYPE, MODEL)
    want = deployed[-1].data.version if deployed else None
    body = json.dumps({"rows": rows.to_dict(orient="records")}).encode()
    deadline = time.monotonic() + timeout
    answer: dict = {}
    while time.monotonic() < deadline:
        serving.check()
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/models/{MODEL}/predict", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
            if answer.get("version") == want:
                return answer
        except OSError:
            pass
        time.sleep(0.3)
    return answer


def versions_table(observer: Observer) -> Table:
    """Every version evaluated: what it was trained on, its score against the champion's, the
    verdict and why, and how long from the data's arrival to its deployment."""
    evaluated = observer.of_type(ev.ModelEvaluated.TYPE, MODEL)
    deployed = {d.data.version: d for d in observer.of_type(ev.DeploymentDone.TYPE, MODEL)}
    arrivals = {d.event.id: d.event.timestamp for d in observer.of_type(ev.DataArrived.TYPE, MODEL)}
    table = Table(title="Versions", show_lines=False)
    for column in ("version", "trained on", "accuracy", "champion then", "verdict", "why",
                   "data → deployed"):
        table.add_column(column)
    requests = {d.event.id: d.data for d in observer.of_type(ev.TrainingRequested.TYPE, MODEL)}
    for d in evaluated:
        data = d.data
        request = _request_of(observer, d, requests)
        champion = (f"v{data.champion_version} {data.champion_metrics.get(data.metric, 0):.3f}"
                    if data.champion_version and data.champion_metrics else "-")
        latency = "-"
        if data.version in deployed:
            latency = f"{deployed[data.version].event.timestamp - arrivals.get(d.event.correlationid, d.event.timestamp):.1f}s"
        trained_on = f"{', '.join(request.data_versions)} ({request.reason})" if request else "?"
        table.add_row(f"v{data.version}", trained_on,
                      f"{data.candidate_metrics.get(data.metric) or 0:.3f}", champion,
                      "[green]promoted[/]" if data.passed else "[red]rejected[/]",
                      escape("; ".join(data.reasons)), latency)
    return table


def _summary(observer: Observer, answer: dict, elapsed: float, drift: dict | None = None,
             link=None) -> None:
    console.print()
    console.print(versions_table(observer))
    evaluated = observer.of_type(ev.ModelEvaluated.TYPE, MODEL)
    failed = observer.of_type(ev.TrainingFailed.TYPE, MODEL)
    counts = Table(title="Summary", show_header=False)
    counts.add_row("data batches", str(len(observer.of_type(ev.DataArrived.TYPE, MODEL))))
    counts.add_row("versions trained", str(len(evaluated)))
    counts.add_row("promoted", str(sum(d.data.passed for d in evaluated)))
    counts.add_row("rejected", str(sum(not d.data.passed for d in evaluated)))
    counts.add_row("failed trainings", str(len(failed)))
    counts.add_row("dead letters", str(len(observer.dead_letters)))
    if drift is not None:
        reasons = [d.data.reason for d in observer.of_type(ev.TrainingRequested.TYPE, MODEL)]
        counts.add_row("drift checks", f"{drift.get('clean', 0)} clean, {drift.get('drifted', 0)} "
                       f"drifted, {drift.get('skipped', 0)} skipped (no champion yet)")
        counts.add_row("drift-triggered trainings", str(sum("drift" in r for r in reasons)))
        for d in observer.of_type(ev.DriftDetected.TYPE, MODEL):
            counts.add_row(f"drift report {d.data.dataset_version}",
                           (link or (lambda u: u))(d.data.report_uri))
    counts.add_row("champion", f"v{answer.get('version', '?')} (answering on the serving endpoint)")
    counts.add_row("elapsed", f"{elapsed:.1f}s")
    console.print(counts)


def _request_of(observer: Observer, evaluated: Decoded, requests: dict):
    """Walk the causation chain back from an evaluation to its training request."""
    by_id = {d.event.id: d for d in observer.events}
    current = by_id.get(evaluated.event.causationid or "")
    while current is not None:
        if current.event.id in requests:
            return requests[current.event.id]
        current = by_id.get(current.event.causationid or "")
    return None
