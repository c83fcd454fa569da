"""`loopline status [--model M | --family F] [--all] [--json]`: what the loop is doing, at a glance.

Per model: the champion and the versions before it with their evaluation numbers, the training
in flight (request, run, link), the last event of each kind, the trigger's state (paused,
suppressed triggers, pending follow-up, rows counted toward the next training), dead letters;
and the worker group's consumer lag per topic. Read from the topics (no consumer group), the
trigger's changelog and MLflow: looking changes nothing.

At scale (bench.scale: 41 s at 10,000 models, issue 18's goal 2 s) three things had to go: one
MLflow call per model (now a few searches for all of them, `adapters.registry.reader`, which
reads a local SQLite store without importing mlflow at all), `config.load` of the whole
`loopline.yaml` (now `catalog_view`, which keeps only names and aliases), and a table per model
(past SUMMARY_THRESHOLD models the default is a summary: counts per state and per family, then
only the models that need attention; `--all` shows every table, `--json` every model).
"""

from __future__ import annotations

import json
import time
from typing import Any

from loopline.commands import render
from loopline.settings import Settings
from streams import events as ev
from streams.describe import describe

SUMMARY_THRESHOLD = 200            # more models than this: a summary unless --all (or --model)
ATTENTION_ROWS = 50                # at most this many models listed under "needs attention"
NO_FAMILY = "-"                    # the family column of a model that belongs to none


def add_parser(sub) -> None:
    cmd = sub.add_parser("status", help="per model: champion, training in flight, last events, "
                                        "pause, suppressed triggers, consumer lag; a summary past "
                                        f"{SUMMARY_THRESHOLD} models")
    which = cmd.add_mutually_exclusive_group()
    which.add_argument("--model", help="only this model")
    which.add_argument("--family", help="only the members of this family")
    cmd.add_argument("--all", action="store_true",
                     help=f"a table per model even past {SUMMARY_THRESHOLD} models (default there: a summary)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output (every model)")
    cmd.set_defaults(func=run)


def run(args, settings: Settings) -> int:
    tables = args.json or getattr(args, "all", False) or bool(args.model)
    report = collect(settings, args.model, family=getattr(args, "family", None), brief=not tables)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif tables or len(report["models"]) <= SUMMARY_THRESHOLD:
        show(report)
    else:
        show_summary(report)
    return 0


# --- gathering -------------------------------------------------------------------------------

def collect(settings: Settings, only: str | None = None, family: str | None = None,
            brief: bool = False) -> dict[str, Any]:
    """Every model's status. `brief`: past SUMMARY_THRESHOLD models, only what the summary shows:
    the last events of the models that need attention (`last_events` is None for the others),
    so the data of the other models' events is never decoded."""
    from concurrent.futures import ThreadPoolExecutor

    from adapters.registry import reader as registry_reader
    from agents import policies as p
    from loopline.commands import lazy_events as lazy
    from loopline.commands.catalog_view import CatalogView, read_catalog_beside
    from loopline.commands.snapshot import NOT_DECISIONS, state_changelog, states_of

    tracking_uri = settings.tracking_uri          # a property that resolves a path: once, not per model
    decisions = [name for name, spec in settings.topics.all().items() if spec.role not in NOT_DECISIONS]
    changelog = state_changelog(settings.group)
    # loopline.yaml is parsed on the other core (forked before any thread starts), and the reads,
    # which wait on the broker and the store most of the time, run side by side, not in turn.
    catalog_of = read_catalog_beside(settings.config) if settings.config.exists() else CatalogView
    with ThreadPoolExecutor(max_workers=3) as pool:
        read_f = pool.submit(lazy.read_topics, settings.broker, [*decisions, changelog, settings.topics.deadletter],
                             settings.kafka_security.confluent())
        lag_f = pool.submit(consumer_lag, settings)
        registry_f = pool.submit(_registered, registry_reader, tracking_uri)
        records = read_f.result()
        registry, registered = registry_f.result()
        lag = lag_f.result()
    catalog = catalog_of()
    events = lazy.lazy_all(r for name in decisions for r in records[name])
    states = states_of(records[changelog])
    letters = lazy.dead_letters_of(records[settings.topics.deadletter])
    names = [only] if only else sorted(set(catalog.models) | set(states))
    if family is not None:
        names = [n for n in names if family_of(n, catalog.families) == family]
    # One pass over the events and the dead letters, not one per model (bench.scale: a scan per
    # model made `status` grow faster than the number of models).
    by_model: dict[str, list] = {}
    for seen in events:
        by_model.setdefault(seen.subject, []).append(seen)
    dead_by_model: dict[str, list] = {}
    for record, letter in letters:
        dead_by_model.setdefault((record.key or b"").decode(errors="replace"), []).append((record, letter))
    aliases = {name: alias_of(name, catalog) for name in names}
    states = {name: states.get(name, p.ModelState()) for name in names}
    found = registry_view(registry, registered, aliases, {n: s.in_flight for n, s in states.items() if s.in_flight})
    brief = brief and not only and len(names) > SUMMARY_THRESHOLD
    models = {}
    for name in names:
        model = model_status(name, aliases[name], by_model.get(name, []), states[name],
                             dead_by_model.get(name, []), found, tracking_uri, brief=brief)
        model["family"] = family_of(name, catalog.families)
        models[name] = model
    return {
        "generated_at": render.iso(time.time()), "group": settings.group,
        "topic_prefix": settings.topic_prefix,
        "models": models,
        "lag": lag,
    }


def _registered(make_reader, tracking_uri: str):
    """(the reader, every registered model): the first search, started beside the bus reads."""
    registry = make_reader(tracking_uri)
    return registry, registry.registered()


def alias_of(name: str, catalog) -> str:
    """The model's alias from loopline.yaml: its own, its family's for a member, else the default."""
    from loopline.commands.catalog_view import DEFAULT_ALIAS

    if name in catalog.models:
        return catalog.models[name]
    family = family_of(name, catalog.families)
    return catalog.families.get(family, DEFAULT_ALIAS) if family else DEFAULT_ALIAS


def family_of(name: str, families) -> str | None:
    """The family a model is a member of (`churn.acme` -> `churn` when loopline.yaml has a family
    `churn`), or None for a plain model (whose name may hold the separator too)."""
    from agents.catalog import split

    parts = split(name)
    return parts[0] if parts and parts[0] in families else None


def registry_view(registry, registered, aliases: dict[str, str], flights: dict[str, str]) -> dict[str, Any]:
    """What status shows of MLflow for every model in a few bulk reads: champions from the
    registered models (already read), then the versions they name, their runs, and the runs of
    each training in flight."""
    from adapters.registry import champion_from

    champions = {name: champion_from(registered.get(name), alias) for name, alias in aliases.items()}
    wanted: dict[str, list[str]] = {}
    for name, champion in champions.items():
        previous = [v for v in reversed(champion.history) if v != champion.version][:5]
        versions = ([champion.version] if champion.version else []) + previous
        if versions:
            wanted[name] = versions
    versions = registry.versions(wanted) if wanted else {}
    runs = registry.runs([v.run_id for v in versions.values() if v.run_id]) if versions else {}
    return {"champions": champions, "versions": versions, "runs": runs,
            "flights": registry.runs_by_key(flights) if flights else {}}


def model_status(name: str, alias: str, mine, state, dead, found: dict[str, Any], tracking_uri: str,
                 brief: bool = False) -> dict:
    """One model's status from its own events and dead letters (in the order they were read) and
    what the bulk reads found in MLflow (`registry_view`). `brief`: last events only if the model
    needs attention (see `collect`)."""
    from loopline.commands.lazy_events import decodable

    champion = found["champions"][name]
    previous = [v for v in reversed(champion.history) if v != champion.version][:5]
    info = lambda v: version_info(name, v, found["versions"], found["runs"], tracking_uri)   # noqa: E731
    rollout_types = (ev.RolloutStarted.TYPE, ev.RolloutAnalysed.TYPE)
    out = {
        "alias": alias,
        "champion": info(champion.version) if champion.version else None,
        "previous": [info(v) for v in previous],
        "paused": state.paused,
        "suppressed_triggers": state.suppressed,
        "suppressed_events": list(getattr(state, "suppressed_keys", ()))[-10:],  # newest last
        "pending": list(state.pending),
        "new_rows": state.new_rows,
        "last_request_at": render.iso(state.last_request_at),
        "in_flight": in_flight(state.in_flight, mine, found["flights"].get(name), tracking_uri),
        "last_events": None,
        "last_training": last_training(mine),
        "rollout": live_rollout(decodable(mine)) if any(_kind(s) in rollout_types for s in mine) else None,
        "dead_letters": {"count": len(dead),
                         "last": {"id": dead[-1][0].ref, "reason": dead[-1][1].reason,
                                  "time": dead[-1][1].time} if dead else None},
    }
    if not brief or any(map(flags(out).get, ATTENTION)):
        out["last_events"] = last_events(mine)
    return out


def _kind(s) -> str:
    """An event's type, from its envelope alone when it was read lazily (lazy_events.LazySeen)."""
    kind = getattr(s, "type", None)
    return kind if kind is not None else s.event.type


def last_training(events) -> str | None:
    """How the newest training ended: "succeeded", "failed", or None (none ended yet)."""
    for s in reversed(events):
        if _kind(s) == ev.TrainingSucceeded.TYPE:
            return "succeeded"
        if _kind(s) == ev.TrainingFailed.TYPE:
            return "failed"
    return None


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


def version_info(model: str, version: str, versions, runs, tracking_uri: str) -> dict:
    """A version's run, gate verdict, data versions and evaluation metrics (from the bulk reads)."""
    mv = versions.get((model, str(version)))
    if mv is None:
        return {"version": version, "missing": True}
    info: dict[str, Any] = {"version": mv.version, "run_id": mv.run_id,
                            "created": render.iso(mv.created_ms / 1000) if mv.created_ms is not None else None,
                            "gate": mv.tags.get("loopline.gate"),
                            "data_versions": [v for v in mv.tags.get("loopline.data_versions", "").split(",") if v],
                            "metrics": {}}
    run = runs.get(mv.run_id) if mv.run_id else None
    if run is not None:
        evaluated = {k[len("eval_candidate_"):]: v for k, v in run.metrics.items()
                     if k.startswith("eval_candidate_")}
        info["metrics"] = evaluated or dict(run.metrics)
        info["run_link"] = render.run_link(tracking_uri, run.experiment_id, mv.run_id)
    return info


def in_flight(key: str | None, events, runs, tracking_uri: str) -> dict | None:
    """The training in flight: its request and start from the events, its runs (`runs`, the runs
    tagged with its idempotency key, oldest first; None when the model has no experiment)."""
    if not key:
        return None
    def newest(kind: str):
        return next((s for s in reversed(events) if _kind(s) == kind and s.decoded is not None
                     and s.data.idempotency_key == key), None)

    request, started = newest(ev.TrainingRequested.TYPE), newest(ev.TrainingStarted.TYPE)
    return {
        "idempotency_key": key,
        "request_id": request.event.id if request else None,
        "reason": request.data.reason if request else None,
        "requested_at": request.event.time if request else None,
        "data_versions": list(request.data.data_versions) if request else [],
        "run_name": started.data.run_name if started else None,
        "launcher": started.data.launcher if started else None,
        "runs": [{"run_id": r.run_id, "step": r.tags.get("loopline.step"), "status": r.status,
                  "link": render.run_link(tracking_uri, r.experiment_id, r.run_id)} for r in runs or ()],
    }


def last_events(events) -> dict[str, dict]:
    """The newest event of each type (clock ticks left out: they say nothing); from the newest
    back, so only one event of each type is decoded (one that does not decode is passed over)."""
    out: dict[str, dict] = {}
    for s in reversed(events):
        kind = _kind(s)
        if kind == ev.ClockTicked.TYPE or kind in out or s.decoded is None:
            continue
        out[kind] = {"id": s.event.id, "time": s.event.time, "summary": describe(s.data)}
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
        for event_type, last in (m["last_events"] or {}).items():
            table.add_row(render.short_type(event_type),
                          f"{last['time']} {escape(last['summary'])} [dim]{last['id']}[/]")
        dead = m["dead_letters"]
        table.add_row("dead letters", str(dead["count"]) + (
            f" (last {dead['last']['id']}: {dead['last']['reason']})" if dead["last"] else ""))
        console.print(table)
    _show_lag(report, console)


def _show_lag(report: dict, console) -> None:
    from rich.table import Table

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


# --- the summary (past SUMMARY_THRESHOLD models) -------------------------------------------------

# (key, column heading): each a yes/no of one model; counted per state and per family.
STATES: tuple[tuple[str, str], ...] = (
    ("in_flight", "in flight"), ("paused", "paused"), ("failed", "failed last run"),
    ("dead_letters", "with dead letters"), ("rollout", "rollout live"), ("no_champion", "no champion"),
    ("suppressing", "suppressing triggers"),
)
ATTENTION = ("paused", "failed", "dead_letters", "rollout_paused")    # what earns a model a row


def flags(m: dict) -> dict[str, bool]:
    """What the summary counts of one model."""
    rollout = m.get("rollout") or {}
    return {"in_flight": m["in_flight"] is not None, "paused": bool(m["paused"]),
            "failed": m.get("last_training") == "failed", "dead_letters": m["dead_letters"]["count"] > 0,
            "rollout": rollout.get("state") in ("running", "paused"),
            "rollout_paused": rollout.get("state") == "paused",
            "no_champion": m["champion"] is None, "suppressing": m["suppressed_triggers"] > 0}


def summarize(report: dict) -> dict[str, Any]:
    """Counts per state and per family, and the models that need attention (newest first is not
    known here: by name), as data: `show_summary` prints it."""
    totals = {key: 0 for key, _ in STATES}
    families: dict[str, dict[str, int]] = {}
    attention: list[tuple[str, dict[str, bool]]] = []
    dead_total = 0
    for name, m in report["models"].items():
        f = flags(m)
        row = families.setdefault(m.get("family") or NO_FAMILY, {"models": 0, **{key: 0 for key, _ in STATES}})
        row["models"] += 1
        for key, _ in STATES:
            totals[key] += f[key]
            row[key] += f[key]
        dead_total += m["dead_letters"]["count"]
        if any(f[key] for key in ATTENTION):
            attention.append((name, f))
    return {"models": len(report["models"]), "totals": totals, "dead_letters": dead_total,
            "families": dict(sorted(families.items(), key=lambda kv: (kv[0] == NO_FAMILY, kv[0]))),
            "attention": attention}


def show_summary(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    s = summarize(report)
    console.print(f"[bold]loopline[/] {report['topic_prefix']} - group {report['group']} - "
                  f"{report['generated_at']} - {s['models']} models (a summary past {SUMMARY_THRESHOLD}: "
                  "`loopline status --all` for every model, --model M for one, --json for all of it)")
    states = Table(title="models by state", title_justify="left")
    states.add_column("state")
    states.add_column("models", justify="right")
    for key, label in STATES:
        states.add_row(label, str(s["totals"][key]) + (f" ({s['dead_letters']} letters)" if key == "dead_letters"
                                                       and s["dead_letters"] else ""))
    console.print(states)
    families = Table(title="by family", title_justify="left")
    families.add_column("family")
    families.add_column("models", justify="right")
    for _, label in STATES:
        families.add_column(label, justify="right")
    for family, row in s["families"].items():
        families.add_row(escape(family), str(row["models"]), *[str(row[key]) for key, _ in STATES])
    console.print(families)
    attention = s["attention"]
    table = Table(title=f"needs attention ({len(attention)}: paused, failed last run, dead letters, "
                        "rollout paused)", title_justify="left")
    for column in ("model", "family", "why", "champion", "last event"):
        table.add_column(column)
    for name, f in attention[:ATTENTION_ROWS]:
        m = report["models"][name]
        why = [w for w, on in (("paused", f["paused"]), ("failed last run", f["failed"]),
                               (f"{m['dead_letters']['count']} dead letters", f["dead_letters"]),
                               ("rollout paused", f["rollout_paused"])) if on]
        newest = max((m["last_events"] or {}).items(), key=lambda kv: kv[1]["time"] or "", default=None)
        table.add_row(escape(name), escape(m.get("family") or NO_FAMILY), ", ".join(why),
                      _version_line(m["champion"]) if m["champion"] else "-",
                      f"{render.short_type(newest[0])} {newest[1]['time']}" if newest else "-")
    if attention:
        console.print(table)
    else:
        console.print("needs attention: none (no model paused, failed, dead-lettered or with a paused rollout)")
    if len(attention) > ATTENTION_ROWS:
        console.print(f"... and {len(attention) - ATTENTION_ROWS} more: `loopline status --json` lists them all")
    console.print(f"every model's table: `loopline status --all`"
                  + ("" if len(s["families"]) <= 1 else "; one family: `loopline status --family F`"))
    _show_lag(report, console)
