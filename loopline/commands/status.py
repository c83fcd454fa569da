"""`loopline status [--model M] [--json]`: what the loop is doing, per model, at a glance.

Per model: the champion and the versions before it with their evaluation numbers, the training
in flight (request, run, link), the last event of each kind, the trigger's state (paused,
suppressed triggers, pending follow-up, rows counted toward the next training), dead letters;
and the worker group's consumer lag per topic. Read from the topics (no consumer group), the
trigger's changelog and MLflow: looking changes nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from loopline.commands import render
from loopline.settings import Settings
from streams import events as ev
from streams.describe import describe


def add_parser(sub) -> None:
    cmd = sub.add_parser("status", help="per model: champion, training in flight, last events, "
                                        "pause, suppressed triggers, consumer lag")
    cmd.add_argument("--model", help="only this model")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.set_defaults(func=run)


def run(args, settings: Settings) -> int:
    report = collect(settings, args.model)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        show(report)
    return 0


# --- gathering -------------------------------------------------------------------------------

def collect(settings: Settings, only: str | None = None) -> dict[str, Any]:
    import mlflow

    from agents import policies as p
    from loopline import config
    from loopline.commands.snapshot import model_states, read_dead_letters, read_events

    aliases = {}
    if settings.config.exists():
        aliases = {name: m.alias for name, m in config.load(settings.config).items()}
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    security = settings.kafka_security.kafka_python()
    events = read_events(settings.broker, settings.topics, **security)
    states = model_states(settings.broker, settings.group, **security)
    letters = read_dead_letters(settings.broker, settings.topics, **security)
    names = [only] if only else sorted(set(aliases) | set(states))
    # One pass over the events and the dead letters, not one per model (bench.scale: a scan per
    # model made `status` grow faster than the number of models).
    by_model: dict[str, list] = {}
    for seen in events:
        by_model.setdefault(seen.event.subject, []).append(seen)
    dead_by_model: dict[str, list] = {}
    for record, letter in letters:
        dead_by_model.setdefault((record.key or b"").decode(errors="replace"), []).append((record, letter))
    return {
        "generated_at": render.iso(time.time()), "group": settings.group,
        "topic_prefix": settings.topic_prefix,
        "models": {name: model_status(name, aliases.get(name, "champion"), by_model.get(name, []),
                                      states.get(name, p.ModelState()), dead_by_model.get(name, []), client,
                                      settings.tracking_uri) for name in names},
        "lag": consumer_lag(settings),
    }


def model_status(name: str, alias: str, mine, state, dead, client, tracking_uri: str) -> dict:
    """One model's status from its own events and dead letters (in the order they were read)."""
    champion, history = champion_of(client, name, alias)
    previous = [v for v in reversed(history) if v != champion][:5]
    return {
        "alias": alias,
        "champion": version_info(client, name, champion, tracking_uri) if champion else None,
        "previous": [version_info(client, name, v, tracking_uri) for v in previous],
        "paused": state.paused,
        "suppressed_triggers": state.suppressed,
        "suppressed_events": list(getattr(state, "suppressed_keys", ()))[-10:],  # newest last
        "pending": list(state.pending),
        "new_rows": state.new_rows,
        "last_request_at": render.iso(state.last_request_at),
        "in_flight": in_flight(client, name, state.in_flight, mine, tracking_uri),
        "last_events": last_events(mine),
        "rollout": live_rollout(mine),
        "dead_letters": {"count": len(dead),
                         "last": {"id": dead[-1][0].ref, "reason": dead[-1][1].reason,
                                  "time": dead[-1][1].time} if dead else None},
    }


def live_rollout(events) -> dict | None:
    """The newest rollout, unless a promote or rollback analysis or a later deployment ended it."""
    from loopline.commands.lineage import rollouts_of

    rollouts = rollouts_of(events)
    if not rollouts:
        return None
    newest = rollouts[-1]
    began = next(s.event.timestamp for s in events if s.event.id == newest["id"])
    ended = any(a["action"] in ("promote", "rollback") for a in newest["analyses"]) or any(
        s.event.type in (ev.DeploymentDone.TYPE, ev.DeploymentRolledBack.TYPE)
        and s.event.timestamp > began for s in events)
    last = newest["analyses"][-1] if newest["analyses"] else None
    return {"experiment": newest["experiment"], "strategy": newest["strategy"],
            "challengers": newest["challenger_versions"], "champion": newest["champion_version"],
            "state": "ended" if ended else ("paused" if last and last["action"] == "pause" else "running"),
            "last_analysis": last}


def champion_of(client, model: str, alias: str) -> tuple[str | None, list[str]]:
    from adapters.registry import MlflowRegistry

    champion = MlflowRegistry("", client=client).champion(model, alias)
    return champion.version, list(champion.history)


def version_info(client, model: str, version: str, tracking_uri: str) -> dict:
    """A version's run, gate verdict, data versions and evaluation metrics."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(model, version)
    except MlflowException:
        return {"version": version, "missing": True}
    info: dict[str, Any] = {"version": str(mv.version), "run_id": mv.run_id,
                            "created": render.iso(mv.creation_timestamp / 1000),
                            "gate": mv.tags.get("loopline.gate"),
                            "data_versions": [v for v in mv.tags.get("loopline.data_versions", "").split(",") if v],
                            "metrics": {}}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
        except MlflowException:
            return info
        metrics = run.data.metrics
        evaluated = {k[len("eval_candidate_"):]: v for k, v in metrics.items()
                     if k.startswith("eval_candidate_")}
        info["metrics"] = evaluated or dict(metrics)
        info["run_link"] = render.run_link(tracking_uri, run.info.experiment_id, mv.run_id)
    return info


def in_flight(client, model: str, key: str | None, events, tracking_uri: str) -> dict | None:
    if not key:
        return None
    request = next((s for s in reversed(events) if s.event.type == ev.TrainingRequested.TYPE
                    and s.data.idempotency_key == key), None)
    started = next((s for s in reversed(events) if s.event.type == ev.TrainingStarted.TYPE
                    and s.data.idempotency_key == key), None)
    out: dict[str, Any] = {
        "idempotency_key": key,
        "request_id": request.event.id if request else None,
        "reason": request.data.reason if request else None,
        "requested_at": request.event.time if request else None,
        "data_versions": list(request.data.data_versions) if request else [],
        "run_name": started.data.run_name if started else None,
        "launcher": started.data.launcher if started else None,
        "runs": [],
    }
    experiment = client.get_experiment_by_name(model)
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`loopline.idempotency_key` = '{key}'",
                                  order_by=["attributes.start_time ASC"])
        out["runs"] = [{"run_id": r.info.run_id, "step": r.data.tags.get("loopline.step"),
                        "status": r.info.status,
                        "link": render.run_link(tracking_uri, r.info.experiment_id, r.info.run_id)}
                       for r in runs]
    return out


def last_events(events) -> dict[str, dict]:
    """The newest event of each type (clock ticks left out: they say nothing)."""
    out: dict[str, dict] = {}
    for s in events:
        if s.event.type == ev.ClockTicked.TYPE:
            continue
        out[s.event.type] = {"id": s.event.id, "time": s.event.time,
                             "summary": describe(s.data)}
    return dict(sorted(out.items()))


def consumer_lag(settings: Settings) -> dict[str, dict]:
    """Per topic: the worker group's committed offsets, the end offsets and the difference."""
    from streams.lag import LagProbe

    names = [n for n, spec in settings.topics.all().items() if spec.role != "deadletter"]
    with LagProbe(settings.broker, settings.group, **settings.kafka_security.kafka_python()) as probe:
        measured = probe.measure(probe.partitions(names))
    out: dict[str, dict] = {}
    for item in measured:
        entry = out.setdefault(item.topic, {"lag": 0, "end": 0, "committed": 0, "consumed": False})
        entry["lag"] += item.lag
        entry["end"] += item.end
        entry["committed"] += item.committed or 0
        entry["consumed"] = entry["consumed"] or item.committed is not None
    for entry in out.values():
        if not entry["consumed"]:
            entry["lag"] = None                  # the group never read it: not a backlog
    return out


# --- showing ---------------------------------------------------------------------------------

def show(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]loopline[/] {report['topic_prefix']} - group {report['group']} - "
                  f"{report['generated_at']}")
    for name, m in report["models"].items():
        table = Table(title=f"model {name}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row(m["alias"], _version_line(m["champion"]) if m["champion"] else "-")
        for info in m["previous"]:
            table.add_row("previous", _version_line(info))
        table.add_row("paused", "[red]yes[/]" if m["paused"] else "no")
        rollout = m.get("rollout")
        if rollout and rollout["state"] != "ended":
            last = rollout["last_analysis"]
            table.add_row("rollout", f"{rollout['strategy']} {rollout['experiment']} "
                          f"({rollout['state']}): v{', v'.join(rollout['challengers'])} vs "
                          f"v{rollout['champion'] or '-'}" + (
                              f"; {last['verdict']} → {last['action']}: {escape(last['reason'])}" if last else ""))
        newest = m.get("suppressed_events") or []
        table.add_row("suppressed triggers", str(m["suppressed_triggers"]) + (
            f" (newest: {newest[-1]})" if newest else ""))
        table.add_row("pending", ", ".join(m["pending"]) or "-")
        table.add_row("new rows", str(m["new_rows"]))
        flight = m["in_flight"]
        if flight:
            runs = ", ".join(f"{r['step']}: {r['link']} ({r['status']})" for r in flight["runs"]) or "-"
            table.add_row("training", f"{flight['reason'] or '?'} (request {flight['request_id'] or '?'}) "
                                      f"run {flight['run_name'] or '-'}; {runs}")
        else:
            table.add_row("training", "none in flight")
        for event_type, last in m["last_events"].items():
            table.add_row(render.short_type(event_type),
                          f"{last['time']} {escape(last['summary'])} [dim]{last['id']}[/]")
        dead = m["dead_letters"]
        table.add_row("dead letters", str(dead["count"]) + (
            f" (last {dead['last']['id']}: {dead['last']['reason']})" if dead["last"] else ""))
        console.print(table)
    lag = Table(title="consumer lag", title_justify="left")
    for column in ("topic", "lag", "committed", "end"):
        lag.add_column(column, justify="left" if column == "topic" else "right")
    for topic, entry in sorted(report["lag"].items()):
        lag.add_row(topic, "-" if entry["lag"] is None else str(entry["lag"]),
                    str(entry["committed"]) if entry["consumed"] else "-", str(entry["end"]))
    console.print(lag)


def _version_line(info: dict) -> str:
    if info.get("missing"):
        return f"v{info['version']} (not in the registry)"
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(info["metrics"].items())[:4])
    gate = f" gate {info['gate']}" if info.get("gate") else ""
    return f"v{info['version']} {metrics or 'no metrics'}{gate} data {','.join(info['data_versions']) or '-'}"
