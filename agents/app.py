"""The Faust app: the agents of the loop, each a few lines of read → decide → act.

    trigger agent   data / drift / metrics / operator / clock / training status → TrainingRequested
    trainer agent   TrainingRequested → launcher.submit (returns at once) → TrainingStarted
    run watcher     launcher.poll → TrainingSucceeded / TrainingFailed
    evaluator agent TrainingSucceeded → gate → ModelEvaluated (+ ModelPromoted)
    deployer agent  ModelPromoted, operator promote/rollback → registry alias → Deployment*

Every handler publishes its result and waits for the ack before returning, so the offset is
committed only after the side effect (at-least-once); every side effect is idempotent (run
names from idempotency keys, aliases set to a value), so a redelivered event changes nothing.
Blocking calls (launchers, the MLflow registry) run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import json
import time
from dataclasses import dataclass, replace
from typing import Mapping

import faust

from agents import policies as p
from agents import transport
from agents.edge import Edge, PermanentError
from agents.ports import Launcher, Registry
from streams import events as ev
from streams.codec import Decoded, build
from streams.envelope import CloudEvent
from streams.topics import Topics
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, RunStatus

log = logging.getLogger("loopline.agents")


@dataclass(frozen=True)
class AppOptions:
    broker: str
    group: str
    topics: Topics
    source: str = "loopline/worker"
    web_port: int = 6066
    rebalance_timeout: float = 4.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    fetch_max_wait_ms: int = transport.DEFAULT_FETCH_MAX_WAIT_MS
    tick_interval: float = 1.0
    poll_interval: float = 0.1
    max_event_bytes: int = 1_000_000
    job_env: Mapping[str, str] = None       # env every launched run gets (MLflow URI, state dir)


class Loop:
    """The handlers, free of Faust's decorators so the wiring below stays a short list."""

    def __init__(self, app: faust.App, opts: AppOptions, models: Mapping, launchers:
                 Mapping[str, Launcher], registry: Registry, state_table):
        self.opts, self.models, self.launchers, self.registry = opts, models, launchers, registry
        self.state = state_table
        self.edge = Edge(app, opts.topics, opts.max_event_bytes)

    def _model(self, event: CloudEvent):
        model = self.models.get(event.subject)
        if model is None:
            raise PermanentError(f"unknown model {event.subject!r} (not in loopline.yaml)")
        return model

    def _event(self, data: ev.EventData, model: str, cause: CloudEvent | None) -> CloudEvent:
        return build(data, model, source=self.opts.source, cause=cause)

    # --- trigger agent ------------------------------------------------------------------------
    async def on_trigger(self, d: Decoded) -> None:
        event, data = d.event, d.data
        model = self._model(event)
        state = p.ModelState.from_dict(self.state[model.name]) if model.name in self.state else p.ModelState()
        signal = self._signal(event, data, state)
        if signal is None:
            return
        if isinstance(signal, p.ModelState):        # pause / resume change state, then re-check
            state, signal = signal, p.Tick(event.key)
        new_state, decision = p.decide_retrain(state, signal, model.retrain, time.time())
        if isinstance(decision, p.TrainRequest):
            await self.edge.publish(self._event(ev.TrainingRequested(
                idempotency_key=decision.idempotency_key, reason=decision.reason,
                causes=list(decision.causes), data_uris=[b.uri for b in decision.batches],
                data_versions=[b.version for b in decision.batches], rows=decision.rows),
                model.name, event))
            log.info("%s: training requested (%s)", model.name, decision.reason)
        elif not isinstance(signal, p.Tick):
            log.info("%s: %s", model.name, decision.reason)
        if new_state != state:                       # ticks mostly change nothing: no changelog write
            self.state[model.name] = new_state.to_dict()

    def _signal(self, event: CloudEvent, data: ev.EventData, state: p.ModelState):
        if isinstance(data, ev.DataArrived):
            return p.DataArrived(event.key, p.Batch(data.uri, data.version, data.rows, event.key))
        if isinstance(data, ev.DriftDetected):
            return p.DriftDetected(event.key, data.drift_share)
        if isinstance(data, ev.ClockTicked):
            return p.Tick(event.key)
        if isinstance(data, (ev.TrainingSucceeded, ev.TrainingFailed)):
            return p.TrainingFinished(event.key, data.idempotency_key,
                                      isinstance(data, ev.TrainingSucceeded))
        if isinstance(data, ev.OperatorCommand):
            if data.command == "retrain":
                return p.ManualRetrain(event.key, data.reason)
            if data.command in ("pause", "resume"):
                return replace(state, paused=data.command == "pause")
        return None                                  # promote / rollback: the deployer's

    # --- trainer agent ------------------------------------------------------------------------
    async def on_training_requested(self, d: Decoded) -> None:
        event, req = d.event, d.data
        model = self._model(event)
        launcher = self.launchers.get(model.launcher)
        if launcher is None:
            raise PermanentError(f"launcher {model.launcher!r} is not configured in this worker")
        name = run_name(model.name, req.idempotency_key)
        env = {**(self.opts.job_env or {}), **{f"LOOPLINE_PARAM_{k.upper()}": v for k, v in model.params.items()},
               "LOOPLINE_MODEL": model.name, "LOOPLINE_IDEMPOTENCY_KEY": req.idempotency_key,
               "LOOPLINE_CORRELATION_ID": event.correlationid, "LOOPLINE_CAUSATION_ID": event.id,
               "LOOPLINE_REQUEST": event.to_json().decode()}
        spec = LaunchSpec(run_name=name, model=model.name, pipeline=model.pipeline, env=env,
                          workdir=model.workdir)
        created = await asyncio.to_thread(launcher.submit, spec)
        await self.edge.publish(self._event(ev.TrainingStarted(
            idempotency_key=req.idempotency_key, run_name=name, launcher=model.launcher,
            created=created), model.name, event))
        log.info("%s: run %s %s", model.name, name, "launched" if created else "already exists")

    # --- run watcher --------------------------------------------------------------------------
    async def watch_runs(self) -> None:
        for launcher in self.launchers.values():
            for status in await asyncio.to_thread(launcher.poll):
                if status.terminal:
                    spec = await asyncio.to_thread(launcher.spec, status.run_name)
                    await self._report(status, spec)
                    await asyncio.to_thread(launcher.mark_reported, status.run_name)

    async def _report(self, status: RunStatus, spec: LaunchSpec | None) -> None:
        request = CloudEvent.from_dict(json.loads(spec.env["LOOPLINE_REQUEST"])) if spec else None
        key = request.data["idempotency_key"] if request else ""
        duration = (status.finished_at - status.started_at) if status.finished_at and status.started_at else None
        if status.phase == "Succeeded":
            data = ev.TrainingSucceeded(idempotency_key=key, run_name=status.run_name,
                                        outputs={k: dict(v) for k, v in status.outputs.items()},
                                        duration_seconds=duration)
        else:
            data = ev.TrainingFailed(idempotency_key=key, run_name=status.run_name,
                                     reason=status.reason or status.phase,
                                     log_tail=list(status.log_tail), duration_seconds=duration)
        await self.edge.publish(self._event(data, status.model, request))
        log.info("%s: run %s %s", status.model, status.run_name, status.phase.lower())

    # --- evaluator agent ----------------------------------------------------------------------
    async def on_training_status(self, d: Decoded) -> None:
        if not isinstance(d.data, ev.TrainingSucceeded):
            return
        event, data = d.event, d.data
        model = self._model(event)
        report = data.outputs.get(model.gate_step, {})
        version = report.get("candidate_version") or _train_version(data.outputs)
        if not version:
            decision = p.Reject("?", (f"step {model.gate_step!r} reported no candidate version "
                                      "(the job logged no model)",))
        else:
            champion = None
            if report.get("champion_version"):
                champion = p.Scores(str(report["champion_version"]), report.get("champion_metrics") or {})
            decision = p.decide_promotion(p.Scores(str(version), report.get("candidate_metrics") or {}),
                                          champion, model.gate)
        passed = isinstance(decision, p.Promote)
        await self.edge.publish(self._event(ev.ModelEvaluated(
            version=str(version or "?"), run_name=data.run_name, metric=model.gate.metric,
            candidate_metrics=_floats(report.get("candidate_metrics")),
            champion_version=report.get("champion_version") and str(report["champion_version"]),
            champion_metrics=_floats(report.get("champion_metrics")) if report.get("champion_metrics") else None,
            passed=passed, reasons=list(decision.reasons)), model.name, event))
        if version:
            await asyncio.to_thread(self.registry.record_evaluation, model.name, str(version),
                                    passed, decision.reasons)
        if passed:
            await self.edge.publish(self._event(ev.ModelPromoted(
                version=str(version), champion_version=report.get("champion_version") and str(report["champion_version"]),
                reasons=list(decision.reasons)), model.name, event))
        log.info("%s: v%s %s: %s", model.name, version, "promoted" if passed else "rejected",
                 "; ".join(decision.reasons))

    # --- deployer agent -----------------------------------------------------------------------
    async def on_deploy(self, d: Decoded) -> None:
        event, data = d.event, d.data
        if isinstance(data, ev.ModelPromoted):
            await self._deploy(event, data.version, "promotion")
        elif isinstance(data, ev.OperatorCommand) and data.command == "promote":
            if not data.version:
                raise PermanentError("operator promote needs --version")
            await self._deploy(event, data.version, f"manual promote: {data.reason}", force=True)
        elif isinstance(data, ev.OperatorCommand) and data.command == "rollback":
            await self._deploy(event, data.version, f"manual rollback: {data.reason}", rollback=True)

    async def _deploy(self, event: CloudEvent, version: str | None, reason: str, *,
                      force: bool = False, rollback: bool = False) -> None:
        model = self._model(event)
        now = await asyncio.to_thread(self.registry.champion, model.name, model.alias)
        if now.last_event == event.key:
            # Redelivered after the alias moved but before the offset commit: the move is done,
            # only the announcement may be missing. A rollback is relative, so never redo it.
            decision: p.Deploy | p.Refuse = p.Deploy(now.version, _before(now.history, now.version))
        elif rollback:
            decision = p.decide_rollback(now.version, now.history, version)
        else:
            decision = p.decide_deploy(version, now.version, now.history, force=force)
        if isinstance(decision, p.Refuse):
            out: ev.EventData = ev.DeploymentRefused(version=version, reason=decision.reason)
        else:
            if now.last_event != event.key:
                await asyncio.to_thread(self.registry.set_champion, model.name, model.alias,
                                        decision.version, p.push_history(now.history, decision.version),
                                        event.key)
            out = (ev.DeploymentRolledBack(version=decision.version, from_version=decision.previous,
                                           alias=model.alias, reason=reason) if rollback else
                   ev.DeploymentDone(version=decision.version, previous_version=decision.previous,
                                     alias=model.alias, reason=reason))
        await self.edge.publish(self._event(out, model.name, event))
        log.info("%s: %s", model.name, out)

    # --- clock --------------------------------------------------------------------------------
    async def tick(self) -> None:
        for name in self.models:
            await self.edge.publish(self._event(ev.ClockTicked(), name, None))


def _before(history, version) -> str | None:
    items = list(history)
    return items[items.index(version) - 1] if version in items and items.index(version) > 0 else None


def _train_version(outputs: Mapping[str, Mapping]) -> str | None:
    for step_outputs in outputs.values():
        if step_outputs.get("model_version"):
            return str(step_outputs["model_version"])
    return None


def _floats(metrics) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, value in (metrics or {}).items():
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            out[str(name)] = None
    return out


def build_app(opts: AppOptions, models: Mapping, launchers: Mapping[str, Launcher],
              registry: Registry) -> faust.App:
    topics = opts.topics
    app = faust.App(
        opts.group, broker=f"{transport.SCHEME}://{opts.broker}", store="memory://",
        processing_guarantee="at_least_once", topic_partitions=topics.partitions,
        topic_allow_declare=True,   # Faust declares only its own changelog/leader topics
        consumer_auto_offset_reset="earliest", web_port=opts.web_port, web_bind="127.0.0.1",
        web_enabled=True, broker_rebalance_timeout=opts.rebalance_timeout,
        broker_session_timeout=opts.session_timeout,
        broker_heartbeat_interval=opts.heartbeat_interval, producer_linger=0.0)
    app.fetch_max_wait_ms = opts.fetch_max_wait_ms
    state = app.Table(f"{opts.group}-model-state", default=None, partitions=topics.partitions,
                      key_type=str, value_type=dict)
    loop = Loop(app, opts, models, launchers, registry, state)
    app.loop_handlers = loop

    def raw(*names: str):
        return app.topic(*names, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw")

    trigger_inputs = (topics.data, topics.drift, topics.operator, topics.clock, topics.training)

    @app.agent(raw(*trigger_inputs), name="trigger")
    async def trigger(stream):
        await loop.edge.consume(stream, loop.on_trigger, owns=set(trigger_inputs))

    @app.agent(raw(topics.training_requests), name="trainer")
    async def trainer(stream):
        await loop.edge.consume(stream, loop.on_training_requested, owns={topics.training_requests})

    @app.agent(raw(topics.training), name="evaluator")
    async def evaluator(stream):
        await loop.edge.consume(stream, loop.on_training_status, owns=set())

    @app.agent(raw(topics.promotion, topics.operator), name="deployer")
    async def deployer(stream):
        await loop.edge.consume(stream, loop.on_deploy, owns={topics.promotion})

    @app.timer(interval=opts.poll_interval, on_leader=True)
    async def run_watcher():
        await loop.watch_runs()

    @app.timer(interval=opts.tick_interval, on_leader=True)
    async def clock():
        await loop.tick()

    return app
