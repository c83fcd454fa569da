"""`loopline why EVENT_ID [--json]`: what caused an event, what it caused, and what was decided on it.

The question every event-driven pipeline gets asked ("why did this run start, and why did that
one not?") answered from the record: the causation ids lead up to the event's causes and down to
its effects, and the `DecisionRecorded` events (`decision.recorded`) say what each policy decided
on it, skips included. A data batch that started nothing shows "retrain → skipped: 400/1000 new
rows"; a drift signal during a training "retrain → suppressed: training in flight; queued
follow-up". A training request names several triggering events (`causes`): it is an effect of
each of them, and they are its causes. Reads the topics like `status` and `lineage`
(`loopline.commands.snapshot`: no consumer group, so looking changes nothing); clock ticks and
serving telemetry are not read.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from loopline.commands import CliError, render
from loopline.settings import Settings
from streams import events as ev
from streams.describe import describe

MAX_DEPTH = 12          # effects followed this many hops down (a chain is ~8: data → deployment)


def add_parser(sub) -> None:
    cmd = sub.add_parser("why", help="what caused an event, what it caused, and what each policy "
                                     "decided on it (why it did, or did not, start a training)")
    cmd.add_argument("event_id", metavar="EVENT_ID")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.set_defaults(func=run)


def run(args, settings: Settings) -> int:
    from loopline.commands.snapshot import read_events

    events = read_events(settings.broker, settings.topics, **settings.kafka_security.kafka_python())
    answer = build(events, args.event_id)
    if answer is None:
        raise CliError(f"no event {args.event_id} on the topics of {settings.topic_prefix!r} (past "
                       "their retention, or a clock tick or telemetry, which are not read)")
    if args.json:
        print(json.dumps(answer, indent=2, default=str))
    else:
        show(answer)
    return 0


def build(events: Iterable, event_id: str) -> dict[str, Any] | None:
    """The event `event_id` with its causes (each chain root first), the decisions taken on it and its
    effects (in causal order, each with its depth), from decoded events (pure)."""
    events = list(events)
    by_id = {s.event.id: s for s in events}
    by_key = {s.event.key: s for s in events}
    target = by_id.get(event_id)
    if target is None:
        return None
    children: dict[str, list] = {}
    for s in events:
        for parent in _parents(s, by_key):
            children.setdefault(parent, []).append(s)

    causes, seen = [], {event_id}
    for cause in _parents_of(target, by_id, by_key):
        chain = []
        while cause is not None and cause.event.id not in seen:    # up the causation chain
            seen.add(cause.event.id)
            chain.insert(0, cause)
            cause = by_id.get(cause.event.causationid or "")
        causes += chain                                              # each chain root first
    decisions = [s for s in children.get(event_id, []) if _decides_on(s, event_id)]
    effects: list[dict] = []
    walked = {event_id} | {s.event.id for s in decisions}
    frontier = [(s, 1) for s in children.get(event_id, []) if s.event.id not in walked]
    while frontier:
        s, depth = frontier.pop(0)
        if s.event.id in walked:
            continue
        walked.add(s.event.id)
        effects.append({**_summary(s), "depth": depth})
        if depth < MAX_DEPTH:
            frontier.extend((c, depth + 1) for c in children.get(s.event.id, []))
    return {"event": {**_summary(target), "data": dict(target.event.data)},
            "causes": [_summary(s) for s in causes],
            "decisions": [_decision(s) for s in decisions],
            "effects": effects}


def _parents(s, by_key: dict) -> list[str]:
    """Ids of the events `s` was caused by: its causationid, and a request's triggering events."""
    out = [s.event.causationid] if s.event.causationid else []
    if isinstance(s.data, ev.TrainingRequested):
        out += [by_key[k].event.id for k in s.data.causes if k in by_key and by_key[k].event.id not in out]
    return out


def _parents_of(s, by_id: dict, by_key: dict) -> list:
    return [by_id[i] for i in _parents(s, by_key) if i in by_id]


def _decides_on(s, event_id: str) -> bool:
    return isinstance(s.data, ev.DecisionRecorded) and s.data.signal_id == event_id


def _summary(s) -> dict[str, Any]:
    e = s.event
    return {"id": e.id, "type": e.type, "time": e.time, "model": e.subject, "source": e.source,
            "summary": describe(s.data), "correlationid": e.correlationid, "causationid": e.causationid}


def _decision(s) -> dict[str, Any]:
    d = s.data
    return {"id": s.event.id, "time": s.event.time, "policy": d.policy, "outcome": d.outcome,
            "reason": d.reason, "request_id": d.request_id}


def show(answer: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    def line(e: dict) -> str:
        return f"{render.short_type(e['type'])} {e['id']} [dim]{e['time']}[/] {escape(e['summary'])}"

    console = console or Console()
    event = answer["event"]
    tree = Tree(f"[bold]{line(event)}[/]  ({escape(event['model'])}, from {escape(event['source'])})")
    causes = tree.add("caused by")
    for cause in answer["causes"]:
        causes.add(line(cause))
    if not answer["causes"]:
        causes.add("[dim]nothing on the record: it came from outside[/]")
    decided = tree.add("decided")
    for d in answer["decisions"]:
        request = f" → training request {d['request_id']}" if d["request_id"] else ""
        decided.add(f"{d['policy']} → [bold]{d['outcome']}[/]: {escape(d['reason'])}{request}")
    if not answer["decisions"]:
        decided.add("[dim]no decision recorded on it[/]")
    caused = tree.add("caused")
    nodes = {event["id"]: caused}
    for effect in answer["effects"]:
        parent = nodes.get(effect["causationid"] or "", caused)
        nodes[effect["id"]] = parent.add(line(effect))
    if not answer["effects"]:
        caused.add("[dim]nothing[/]")
    console.print(tree)
