"""`loopline publish retrain|promote|rollback|pause|resume`: signed operator commands.

Every command names the model and a reason, and is signed with the operator's key (the key's
operator is the identity the event carries); the worker's operator gate refuses anything
unsigned, forged, replayed or expired. `--dry-run` builds and signs the same event, asks the
same pure policies the agents use what they would decide on the current state (the trigger's
state from its changelog, the champion from the registry), prints it and publishes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from loopline.commands import CliError, require_broker
from loopline.settings import Settings
from streams import events as ev
from streams import signing
from streams.codec import build
from streams.envelope import CloudEvent

COMMANDS = ("retrain", "promote", "rollback", "pause", "resume")
HELP = {
    "retrain": "force a training now (bypasses pause and cooldown)",
    "promote": "move the serving alias to --version",
    "rollback": "move the serving alias back (to the previous champion, or --to VERSION)",
    "pause": "ignore automatic triggers for the model until resume (they are counted suppressed)",
    "resume": "undo pause; a retrain that was suppressed meanwhile happens once",
}


def add_parsers(kinds) -> None:
    for command in COMMANDS:
        cmd = kinds.add_parser(command, help=f"operator command: {HELP[command]}",
                               description=HELP[command])
        cmd.add_argument("--model", required=True)
        cmd.add_argument("--reason", required=True, help="why; kept in the record")
        if command == "promote":
            cmd.add_argument("--version", required=True, help="the model version to promote")
        if command == "rollback":
            cmd.add_argument("--to", dest="version", metavar="VERSION",
                             help="a version that was champion (default: the previous champion)")
        cmd.add_argument("--dry-run", action="store_true",
                         help="show what the policies would decide; publish nothing")
        cmd.add_argument("--key-id", help="your operator key id (default: LOOPLINE_OPERATOR_KEY_ID, "
                                          "else the only key in LOOPLINE_OPERATOR_KEYS)")
        cmd.add_argument("--ttl", type=float, metavar="SECONDS",
                         help="how long the command stays valid (default: LOOPLINE_OPERATOR_TTL_SECONDS)")
        cmd.add_argument("--json", action="store_true", help="machine-readable output")


def signing_key(settings: Settings, key_id: str | None) -> signing.OperatorKey:
    if not settings.operator_keys:
        raise CliError("no operator key: set LOOPLINE_OPERATOR_KEYS to your keys file "
                       "(key id -> {operator, secret})")
    keys = signing.load_keys(settings.operator_keys)
    key_id = key_id or settings.operator_key_id
    if not key_id:
        if len(keys) != 1:
            raise CliError(f"{settings.operator_keys} holds {len(keys)} keys: choose one with "
                           f"--key-id or LOOPLINE_OPERATOR_KEY_ID ({', '.join(sorted(keys))})")
        return next(iter(keys.values()))
    if key_id not in keys:
        raise CliError(f"key id {key_id!r} is not in {settings.operator_keys}")
    return keys[key_id]


def command_event(command: str, model: str, reason: str, version: str | None,
                  key: signing.OperatorKey, now: float, ttl: float) -> CloudEvent:
    data = ev.OperatorCommand(command=command, reason=reason, operator=key.operator,
                              version=version)
    event = build(data, model, source=f"loopline/cli/{key.operator}")
    return signing.sign(event, key, now=now, ttl_seconds=ttl)


def run(args, settings: Settings) -> int:
    now = time.time()
    key = signing_key(settings, args.key_id)
    event = command_event(args.kind, args.model, args.reason, getattr(args, "version", None), key,
                          now, args.ttl or settings.operator_ttl_seconds)
    if args.dry_run:
        outcome = preview(args.kind, event, settings, now)
        if args.json:
            print(json.dumps({"published": False, "event": event.to_dict(), **outcome}, indent=2))
        else:
            print(f"dry run: {args.kind} for {args.model} as {key.operator} (key {key.key_id}); "
                  "nothing published")
            print(f"  would: {outcome['would']}")
            for line in outcome.get("details", []):
                print(f"    {line}")
        return 0
    from streams.publisher import Publisher

    security = settings.kafka_security
    require_broker(settings.broker, security=security)
    with Publisher(settings.broker, settings.topics, **security.kafka_python()) as publisher:
        publisher.publish(event)
    if args.json:
        print(json.dumps({"published": True, "event": event.to_dict()}, indent=2))
    else:
        print(f"published {args.kind} {event.id} for {args.model} as {key.operator} "
              f"(key {key.key_id}, valid until {event.extensions[signing.EXPIRY]})")
    return 0


def preview(command: str, event: CloudEvent, settings: Settings, now: float) -> dict:
    """What the agents would decide for `event` now: {"would": one line, "details": [...]}."""
    from loopline import config

    models = config.load(settings.config)
    model = models.get(event.subject)
    if model is None:
        return {"would": f"be dead-lettered: {models.problem(event.subject)}", "decision": "rejected"}
    if command in ("promote", "rollback"):
        return _preview_deploy(command, event, model, settings)
    return _preview_trigger(command, event, model, settings, now)


def _preview_trigger(command: str, event: CloudEvent, model, settings: Settings, now: float) -> dict:
    from agents import policies as p
    from loopline.commands.snapshot import model_states

    security = settings.kafka_security
    require_broker(settings.broker, security=security)
    state = model_states(settings.broker, settings.group, **security.kafka_python()).get(
        model.name, p.ModelState())
    details = [f"state: paused={state.paused} in_flight={state.in_flight or '-'} "
               f"new_rows={state.new_rows} pending={','.join(state.pending) or '-'} "
               f"suppressed={state.suppressed}"]
    if command == "pause":
        would = "change nothing: already paused" if state.paused else \
            "pause: automatic triggers are suppressed until resume (manual commands still work)"
        return {"would": would, "decision": "pause", "details": details}
    if command == "resume" and not state.paused:
        return {"would": "change nothing: not paused", "decision": "resume", "details": details}
    if command == "resume":
        _, decision = p.decide_retrain(replace(state, paused=False), p.Tick(event.key),
                                       model.retrain, now)
    else:
        _, decision = p.decide_retrain(state, p.ManualRetrain(event.key, event.data["reason"]),
                                       model.retrain, now)
    if isinstance(decision, p.TrainRequest):
        details.append(f"idempotency key {decision.idempotency_key}, causes "
                       f"{', '.join(decision.causes)}")
        details.append(f"data versions {', '.join(b.version for b in decision.batches) or '-'} "
                       f"({decision.rows} new rows)")
        prefix = "resume and " if command == "resume" else ""
        return {"would": f"{prefix}request a training (reason {decision.reason})",
                "decision": "train", "idempotency_key": decision.idempotency_key,
                "details": details}
    prefix = "resume; " if command == "resume" else "not train now: "
    return {"would": f"{prefix}{decision.reason}", "decision": "skip", "details": details}


def _preview_deploy(command: str, event: CloudEvent, model, settings: Settings) -> dict:
    from agents import policies as p
    from adapters.registry import MlflowRegistry

    registry = MlflowRegistry(settings.tracking_uri)
    now = registry.champion(model.name, model.alias)
    version = event.data.get("version")
    details = [f"{model.alias}: v{now.version or '-'}; history {', '.join(now.history) or '-'}"]
    if command == "promote":
        decision = p.decide_deploy(version, now.version, now.history, force=True)
    else:
        decision = p.decide_rollback(now.version, now.history, version)
    if isinstance(decision, p.Refuse):
        return {"would": f"be refused: {decision.reason}", "decision": "refuse", "details": details}
    try:
        registry.client.get_model_version(model.name, decision.version)
    except Exception:  # noqa: BLE001 - mlflow raises its own exception for a missing version
        return {"would": f"fail: {model.name} has no version {decision.version}",
                "decision": "refuse", "details": details}
    if decision.version == now.version:
        return {"would": f"change nothing: v{now.version} is already {model.alias}",
                "decision": "none", "version": decision.version, "details": details}
    verb = "roll back" if command == "rollback" else "promote"
    return {"would": f"{verb} {model.alias} v{now.version or '-'} -> v{decision.version}",
            "decision": command, "version": decision.version, "previous": now.version,
            "details": details}

