"""`loopline lineage MODEL VERSION [--json]`: the chain that produced and deployed one version.

The triggering events (each with what the retrain policy decided on it: a batch that only
counted toward the request says "skipped: 400/1000 new rows"), the training request, the run,
the data versions, the evaluation with its numbers, the promotion and every deployment (with
the operator command behind it, if any), rebuilt from the topics and from MLflow; the run's
dataset inputs (name, digest, source, logged by the step with `ctx.log_input`) come from MLflow. The chain's ids are also on the version's tags
(`loopline.lineage.*`, written by the job, the evaluator and the deployer), so once the topics'
retention has passed the same chain is still named, by ids, from the tags alone (`--no-topics`
shows exactly that view).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from loopline.commands import CliError, render
from loopline.settings import Settings
from stepkit.lineage import LINEAGE_TAG_PREFIX, json_list, lineage_tag
from streams import events as ev
from streams.describe import describe


def add_parser(sub) -> None:
    cmd = sub.add_parser("lineage", help="the events, request, run, data, evaluation, promotion and "
                                         "deployments behind a model version")
    cmd.add_argument("model")
    cmd.add_argument("version")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument("--no-topics", action="store_true",
                     help="use MLflow tags only (what is left after the topics' retention)")
    cmd.set_defaults(func=run)


def run(args, settings: Settings) -> int:
    chain = collect(settings, args.model, args.version, topics=not args.no_topics)
    if args.json:
        print(json.dumps(chain, indent=2, default=str))
    else:
        show(chain)
    return 0


def collect(settings: Settings, model: str, version: str, topics: bool = True) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    from loopline.commands.snapshot import read_events

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        mv = client.get_model_version(model, version)
    except MlflowException:
        raise CliError(f"{model} has no version {version} in {settings.tracking_uri}") from None
    run_info: dict[str, Any] = {"run_id": mv.run_id}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            run_info.update(experiment_id=run.info.experiment_id, tags=dict(run.data.tags),
                            metrics=dict(run.data.metrics), status=run.info.status,
                            link=render.run_link(settings.tracking_uri, run.info.experiment_id, mv.run_id),
                            datasets=datasets_of(run))
        except MlflowException:
            pass
    events = read_events(settings.broker, settings.topics, **settings.kafka_security.kafka_python()) if topics else []
    return build(model, str(mv.version), dict(mv.tags), run_info, events)


def build(model: str, version: str, tags: dict[str, str], run: dict[str, Any],
          events: Iterable) -> dict[str, Any]:
    """The chain of `model` v`version` from its tags, its run and the events (pure)."""
    events = [s for s in events if s.event.subject == model]
    by_id = {s.event.id: s for s in events}
    decided: dict[str, list] = {}                  # signal id -> the decisions taken on it
    for s in events:
        if isinstance(s.data, ev.DecisionRecorded) and s.data.signal_id:
            decided.setdefault(s.data.signal_id, []).append(s)
    by_key = {s.event.key: s for s in events}
    run_tags = run.get("tags") or {}

    def tagged(name: str) -> str | None:
        return tags.get(lineage_tag(name))

    key = tags.get("loopline.idempotency_key") or run_tags.get("loopline.idempotency_key")
    request_id = tagged("request_id") or run_tags.get("loopline.causation_id")

    request = by_id.get(request_id) if request_id else None
    if request is None or request.event.type != ev.TrainingRequested.TYPE:
        request = next((s for s in events if s.event.type == ev.TrainingRequested.TYPE
                        and s.data.idempotency_key == key), None)
    causes = list(request.data.causes) if request else json_list(tagged("trigger_events"))
    data_versions = (list(request.data.data_versions) if request else
                     [v for v in (tags.get("loopline.data_versions") or "").split(",") if v])

    def of_key(*types: str) -> list:
        return [s for s in events if s.event.type in types and getattr(s.data, "idempotency_key", None) == key]

    def of_version(*types: str) -> list:
        return [s for s in events if s.event.type in types and getattr(s.data, "version", None) == version]

    started = of_key(ev.TrainingStarted.TYPE)
    finished = of_key(ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE)
    evaluation = _pick(of_version(ev.ModelEvaluated.TYPE), tagged("evaluated_event_id"))
    promotion = _pick(of_version(ev.ModelPromoted.TYPE), tagged("promoted_event_id"))
    deployments = of_version(ev.DeploymentDone.TYPE, ev.DeploymentRolledBack.TYPE)
    deployed_ids = {s.event.id for s in deployments}
    retired = [s for s in events if (s.event.type == ev.DeploymentRolledBack.TYPE and s.data.from_version == version)
               or (s.event.type == ev.DeploymentDone.TYPE and s.data.previous_version == version
                   and s.data.version != version)]

    return {
        "model": model, "version": version,
        "sources": {"topics": bool(events), "tags": any(k.startswith(LINEAGE_TAG_PREFIX) for k in tags)},
        "correlation_id": tags.get("loopline.correlation_id") or tagged("correlation_id"),
        "idempotency_key": key,
        "triggers": [_trigger(c, by_key.get(c), decided) for c in causes],
        "request": _request(request, request_id, key),
        "training": {
            "run_name": tags.get("loopline.run_name") or (started[0].data.run_name if started else None),
            "started": [_ref(s) for s in started],
            "finished": [_ref(s, duration_seconds=s.data.duration_seconds) for s in finished]
            or _ids(tagged("training_event_id")),
        },
        "run": {"run_id": run.get("run_id"), "link": run.get("link"), "status": run.get("status"),
                "causation_id": run_tags.get("loopline.causation_id"),
                "data_versions": [v for v in (run_tags.get("loopline.data_versions") or "").split(",") if v],
                "metrics": _eval_metrics(run.get("metrics") or {}),
                "datasets": list(run.get("datasets") or [])},
        "data_versions": data_versions,
        "gate": tags.get("loopline.gate"),
        "evaluation": _evaluation(evaluation, tags),
        "promotion": (_ref(promotion, champion_version=promotion.data.champion_version,
                           reasons=list(promotion.data.reasons)) if promotion else
                      ({"id": tagged("promoted_event_id")} if tagged("promoted_event_id") else None)),
        "deployments": [_deployment(s, by_id) for s in deployments] + [
            {"id": i} for i in json_list(tagged("deployment_event_ids")) if i not in deployed_ids],
        "retired": [_deployment(s, by_id) for s in retired],
        "rollouts": rollouts_of(events, version),
    }


def datasets_of(run) -> list[dict[str, Any]]:
    """The run's MLflow dataset inputs (`ctx.log_input`): name, digest, source URI, context.

    The digest is the full one the step gave when MLflow had to shorten it (input tag
    `loopline.digest`); the source is the URI of the source's JSON, or that JSON itself.
    """
    out = []
    inputs = getattr(run, "inputs", None)
    for item in (getattr(inputs, "dataset_inputs", None) or []):
        tags = {t.key: t.value for t in item.tags or []}
        d = item.dataset
        try:
            source = json.loads(d.source).get("uri") or d.source
        except (TypeError, ValueError, AttributeError):
            source = d.source
        out.append({"name": d.name, "digest": tags.get("loopline.digest") or d.digest,
                    "source": source, "source_type": d.source_type,
                    "context": tags.get("mlflow.data.context")})
    return out


def rollouts_of(events: Iterable, version: str | None = None) -> list[dict[str, Any]]:
    """Each rollout (of `version` as a challenger, or every one): its start and its analyses."""
    started = [s for s in events if s.event.type == ev.RolloutStarted.TYPE
               and (version is None or version in s.data.challenger_versions)]
    out = []
    for start in started:
        analyses = [s for s in events if s.event.type == ev.RolloutAnalysed.TYPE
                    and s.data.experiment == start.data.experiment]
        out.append(_ref(start, experiment=start.data.experiment, strategy=start.data.strategy,
                        champion_version=start.data.champion_version,
                        challenger_versions=list(start.data.challenger_versions),
                        analyses=[_ref(a, verdict=a.data.verdict, action=a.data.action, step=a.data.step,
                                       weight=a.data.weight, test=a.data.test, numbers=dict(a.data.numbers),
                                       reason=a.data.reason) for a in analyses]))
    return out


def _pick(candidates: list, wanted_id: str | None):
    if wanted_id:
        for s in candidates:
            if s.event.id == wanted_id:
                return s
    return candidates[-1] if candidates else None


def _ref(s, **extra) -> dict:
    return {"id": s.event.id, "type": s.event.type, "time": s.event.time, **extra}


def _ids(value: str | None) -> list[dict]:
    return [{"id": value}] if value else []


def _trigger(cause_key: str, s, decided: dict[str, list]) -> dict:
    source, _, event_id = cause_key.rpartition("#")
    decisions = [_ref(d, policy=d.data.policy, outcome=d.data.outcome, reason=d.data.reason,
                      request_id=d.data.request_id) for d in decided.get(event_id, [])]
    if s is None:
        return {"key": cause_key, "id": event_id, "source": source, "decisions": decisions}
    return {"key": cause_key, "id": s.event.id, "source": s.event.source, "type": s.event.type,
            "time": s.event.time, "summary": describe(s.data), "decisions": decisions}


def _request(s, request_id: str | None, key: str | None) -> dict | None:
    if s is None:
        return {"id": request_id, "idempotency_key": key} if request_id or key else None
    return _ref(s, idempotency_key=s.data.idempotency_key, reason=s.data.reason, rows=s.data.rows,
                data_versions=list(s.data.data_versions), data_uris=list(s.data.data_uris),
                causation_id=s.event.causationid)


def _evaluation(s, tags: dict[str, str]) -> dict | None:
    if s is None:
        wanted = tags.get(lineage_tag("evaluated_event_id"))
        return {"id": wanted, "passed": tags.get("loopline.gate") == "passed",
                "reasons": [r for r in (tags.get("loopline.gate.reasons") or "").split(" | ") if r]} \
            if wanted else None
    d = s.data
    return _ref(s, passed=d.passed, metric=d.metric, candidate_metrics=dict(d.candidate_metrics),
                champion_version=d.champion_version,
                champion_metrics=dict(d.champion_metrics) if d.champion_metrics else None,
                reasons=list(d.reasons))


def _deployment(s, by_id: dict) -> dict:
    out = _ref(s, summary=describe(s.data))
    cause = by_id.get(s.event.causationid or "")
    if cause is not None:
        out["cause"] = _ref(cause, summary=describe(cause.data))
        if isinstance(cause.data, ev.OperatorCommand):
            out["cause"].update(command=cause.data.command, operator=cause.data.operator,
                                reason=cause.data.reason)
    elif s.event.causationid:
        out["cause"] = {"id": s.event.causationid}
    return out


def _eval_metrics(metrics: dict[str, float]) -> dict[str, float]:
    evaluated = {k: v for k, v in metrics.items() if k.startswith("eval_")}
    return dict(sorted((evaluated or metrics).items()))


# --- showing ---------------------------------------------------------------------------------

def show(chain: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    console = console or Console()
    where = " + ".join(k for k, v in chain["sources"].items() if v) or "nothing"
    tree = Tree(f"[bold]{chain['model']} v{chain['version']}[/]  (from {where}; correlation "
                f"{chain['correlation_id'] or '-'})")
    triggers = tree.add("triggered by")
    for t in chain["triggers"] or [{"id": "-"}]:
        detail = f" {render.short_type(t['type'])} {escape(t['summary'])}" if t.get("type") else ""
        node = triggers.add(f"{t['id']}{detail} [dim]{t.get('source', '')}[/]")
        for d in t.get("decisions") or []:
            node.add(f"{d['policy']} → {d['outcome']}: {escape(d['reason'])}")
    req = chain["request"]
    if req:
        line = f"training request {req.get('id') or '?'}"
        if req.get("reason"):
            line += f" ({req['reason']}, {req['rows']} new rows)"
        tree.add(line + f" [dim]key {req.get('idempotency_key') or '-'}[/]")
    training = chain["training"]
    run = chain["run"]
    run_node = tree.add(f"run {run['run_id'] or '-'} {run.get('link') or ''} "
                        f"[dim]{training.get('run_name') or ''}[/]")
    for s in training["started"]:
        run_node.add(f"started {s['id']}")
    for s in training["finished"]:
        duration = s.get("duration_seconds")
        run_node.add(f"{render.short_type(s.get('type', 'finished'))} {s['id']}"
                     + (f" in {duration:.1f}s" if duration else ""))
    tree.add(f"data versions {', '.join(chain['data_versions']) or '-'}")
    datasets = run.get("datasets") or []
    if datasets:
        node = tree.add("datasets (MLflow inputs)")
        for d in datasets:
            node.add(f"{escape(d['name'])} [dim]{d.get('context') or ''}[/] {d['digest']} "
                     f"{escape(str(d['source']))}")
    evaluation = chain["evaluation"]
    if evaluation:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in (evaluation.get("candidate_metrics") or {}).items()
                            if isinstance(v, (int, float)))
        champ = evaluation.get("champion_version")
        node = tree.add(f"evaluation {evaluation['id']}: {'passed' if evaluation.get('passed') else 'rejected'}"
                        f" {metrics}" + (f" vs champion v{champ}" if champ else ""))
        for reason in evaluation.get("reasons") or []:
            node.add(escape(reason))
    promotion = chain["promotion"]
    tree.add(f"promotion {promotion['id']}" if promotion else "promotion -")
    for rollout in chain.get("rollouts") or []:
        node = tree.add(f"{rollout['strategy']} rollout {rollout['experiment']} against "
                        f"v{rollout['champion_version'] or '-'} ({rollout['id']})")
        for a in rollout["analyses"]:
            node.add(f"step {a['step']}: {a['verdict']} → {a['action']}: {escape(a['reason'])}")
    deployments = tree.add("deployments")
    for d in chain["deployments"] or [{"id": "-"}]:
        node = deployments.add(f"{d['id']} {escape(d.get('summary', ''))}")
        cause = d.get("cause")
        if cause:
            node.add(f"caused by {cause['id']} {escape(cause.get('summary', ''))}")
    for d in chain["retired"]:
        deployments.add(f"[dim]later: {d['id']} {escape(d.get('summary', ''))}[/]")
    console.print(tree)
