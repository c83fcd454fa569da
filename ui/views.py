"""What the page's API answers, computed from the store's events (pure: no I/O, no clock).

    events_view      the timeline's rows, filtered by model and type, newest last
    detail           one event: what caused it, what it caused, the decisions about it
    champion_history each version's time as champion, from the deployment events
    experiment_series each rollout's arms (traffic weight, rewards counted, mean) over time
    models_view      each model's champion, alias and live rollout

"Why not": a signal (data, drift, metric, operator) that started nothing has no training among
its effects; the policy's decision about it (`io.loopline.decision.recorded`, found by
`signal_id`) says why, in the policy's own sentence.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from loopline.commands.render import matches_type
from streams import events as ev
from ui.store import LANES, SIGNAL_LANES, EventStore, Item

MAX_CHAIN = 200                       # effects listed per event (a drift storm can cause many)


def events_view(store: EventStore, model: str | None = None, types: str | None = None,
                limit: int = 5000) -> list[dict[str, Any]]:
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]

    def keep(item: Item) -> bool:
        if model and item.event.subject != model:
            return False
        return not wanted or any(item.lane == t or matches_type(item.event.type, t) for t in wanted)

    chosen = [i for i in store.items if keep(i)]
    chosen.sort(key=lambda i: i.ts)
    return [i.to_json() for i in chosen[-limit:]] if limit > 0 else []


def detail(store: EventStore, event_id: str) -> dict[str, Any] | None:
    item = store.by_id.get(event_id)
    if item is None:
        return None
    decisions = _decisions_about(store, item)
    effects = [e for e in _descendants(store, event_id) if e.lane != "decision"]
    started_training = any(e.event.type == ev.TrainingRequested.TYPE for e in effects)
    return {
        "event": {**item.to_json(), "data": dict(item.raw), "source": item.event.source},
        "causes": [c.to_json() for c in _ancestors(store, item)],
        "effects": [e.to_json() for e in effects],
        "decisions": [_decision(d) for d in decisions],
        "signal": item.lane in SIGNAL_LANES,
        "started_training": started_training,
    }


def _ancestors(store: EventStore, item: Item) -> list[Item]:
    """What caused `item`, oldest first: its causation chain, and a request's triggering events."""
    chain: list[Item] = []
    seen = {item.event.id}
    parent_id = item.event.causationid
    current = item
    while True:
        extra = [store.by_key[k] for k in _request_causes(current) if k in store.by_key]
        for cause in extra:
            if cause.event.id not in seen:
                seen.add(cause.event.id)
                chain.append(cause)
        parent = store.by_id.get(parent_id or "")
        if parent is None or parent.event.id in seen:
            break
        seen.add(parent.event.id)
        chain.append(parent)
        current, parent_id = parent, parent.event.causationid
    chain.sort(key=lambda i: i.ts)
    return chain


def _request_causes(item: Item) -> list[str]:
    if isinstance(item.data, ev.TrainingRequested):
        return list(item.data.causes)
    return []


def _descendants(store: EventStore, event_id: str) -> list[Item]:
    """What `event_id` caused, directly or through what it caused, oldest first."""
    out, seen, frontier = [], {event_id}, [event_id]
    # A training request names all its triggering events in `causes`, but its causationid only
    # one: the others reach it through the request's cause list.
    requests_of = _requests_by_cause(store, event_id)
    while frontier and len(out) < MAX_CHAIN:
        current = frontier.pop(0)
        next_ids = list(store.children.get(current, ())) + requests_of.pop(current, [])
        for child_id in next_ids:
            if child_id in seen or child_id not in store.by_id:
                continue
            seen.add(child_id)
            out.append(store.by_id[child_id])
            frontier.append(child_id)
    out.sort(key=lambda i: i.ts)
    return out[:MAX_CHAIN]


def _requests_by_cause(store: EventStore, event_id: str) -> dict[str, list[str]]:
    item = store.by_id[event_id]
    if item.lane not in SIGNAL_LANES:
        return {}
    key = item.event.key
    hits = [i.event.id for i in store.items
            if isinstance(i.data, ev.TrainingRequested) and key in i.data.causes]
    return {event_id: hits} if hits else {}


def _decisions_about(store: EventStore, item: Item) -> list[Item]:
    ids = list(store.decisions.get(item.event.id, ()))
    ids += [c for c in store.children.get(item.event.id, ()) if store.by_id[c].lane == "decision"]
    out, seen = [], set()
    for i in ids:
        if i not in seen and i in store.by_id:
            seen.add(i)
            out.append(store.by_id[i])
    out.sort(key=lambda i: i.ts)
    return out


def _decision(item: Item) -> dict[str, Any]:
    d = item.raw
    return {**item.to_json(), **{k: d.get(k) for k in ("policy", "outcome", "reason", "signal_id",
                                                        "signal_type", "request_id")}}


def champion_history(items: Iterable[Item], model: str, alias: str = "champion") -> list[dict[str, Any]]:
    """Each time `alias` moved: the version, from when, until when (None: still), why."""
    moves = [i for i in items if i.event.subject == model
             and isinstance(i.data, (ev.DeploymentDone, ev.DeploymentRolledBack)) and i.data.alias == alias]
    moves.sort(key=lambda i: i.ts)
    out = []
    for index, move in enumerate(moves):
        until = moves[index + 1] if index + 1 < len(moves) else None
        out.append({"version": move.data.version, "from": move.event.time, "from_ts": move.ts,
                    "to": until.event.time if until else None, "to_ts": until.ts if until else None,
                    "reason": move.data.reason or move.summary, "event_id": move.event.id,
                    "rolled_back": isinstance(move.data, ev.DeploymentRolledBack)})
    return out


def experiment_series(states: Iterable[tuple[float, ev.ExperimentUpdated]],
                      max_points: int = 2000) -> list[dict[str, Any]]:
    """(timestamp, ExperimentUpdated) of one model -> each experiment's points, oldest first."""
    by_experiment: dict[str, dict[str, Any]] = {}
    for ts, state in sorted(states, key=lambda pair: pair[0]):
        entry = by_experiment.setdefault(state.experiment, {
            "experiment": state.experiment, "strategy": state.strategy, "points": []})
        entry["status"], entry["winner"] = state.status, state.winner
        entry["points"].append({"ts": ts, "step": state.step, "arms": [
            {"version": a.version, "role": a.role, "weight": a.weight, "n": a.n,
             "mean": (a.reward_sum / a.n) if a.n else None} for a in state.arms]})
    for entry in by_experiment.values():
        points = entry["points"]
        if len(points) > max_points:            # thin evenly, keep the newest
            stride = len(points) / max_points
            entry["points"] = [points[int(k * stride)] for k in range(max_points - 1)] + [points[-1]]
    return list(by_experiment.values())


def models_view(store: EventStore, aliases: Mapping[str, str]) -> list[dict[str, Any]]:
    from loopline.commands.status import live_rollout

    names = sorted(set(aliases) | store.models())
    out = []
    for name in names:
        alias = aliases.get(name, "champion")
        mine = store.typed(name)
        history = champion_history(mine, name, alias)
        rollout = live_rollout(mine)
        out.append({"name": name, "alias": alias, "champion": history[-1]["version"] if history else None,
                    "rollout": rollout if rollout and rollout["state"] != "ended" else None,
                    "versions": versions_of(mine),
                    "events": sum(1 for i in store.items if i.event.subject == name)})
    return out


def versions_of(items: Iterable[Item]) -> list[str]:
    """The versions the record names (evaluated, promoted, deployed), in number order."""
    found = {i.data.version for i in items
             if isinstance(i.data, (ev.ModelEvaluated, ev.ModelPromoted, ev.DeploymentDone))}
    return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))


def lane_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {lane: 0 for lane in LANES}
    for row in rows:
        counts[row["lane"]] = counts.get(row["lane"], 0) + 1
    return counts
