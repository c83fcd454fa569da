"""The trigger agent: data, drift, operator, clock and training outcomes → training requests.

It keeps one `ModelState` per model in a Faust table (changelogged, so it survives restarts)
and hands every event to the pure `decide_retrain` reducer. The request is published before
the new state is stored: a crash in between redelivers the event, the reducer decides the same
request with the same idempotency key, and the trainer's run name makes the second launch a
no-op. The reverse order could remember an event whose request was never sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from agents import policies as p
from agents.context import Context
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent

log = logging.getLogger("loopline.trigger")


def state_table(group: str) -> str:
    """Name of the Faust table of ModelStates (`loopline status` reads its changelog)."""
    return f"{group}-model-state"


def state_changelog(group: str) -> str:
    """Faust names a table's changelog topic `<app id>-<table name>-changelog`."""
    return f"{group}-{state_table(group)}-changelog"


class Trigger:
    def __init__(self, ctx: Context, table, guard=None):
        self.ctx, self.table = ctx, table
        self.guard = guard          # agents.guard.MetricGuard: metric windows and deployments

    def state(self, model: str) -> p.ModelState:
        raw = self.table.get(model)
        return p.ModelState.from_dict(raw) if raw else p.ModelState()

    async def handle(self, d: Decoded) -> None:
        event, model = d.event, self.ctx.model(d.event)
        stored = state = self.state(model.name)
        if self.guard is not None and isinstance(d.data, self.guard.HANDLES):
            signal = await self.guard.handle(d, model)     # a bad metric window, or None
        else:
            signal = self.signal(event, d.data, state)
        if signal is None:
            return
        if isinstance(signal, p.ModelState):          # pause / resume: new state, then re-check
            state, signal = signal, p.Tick(event.key)
        new_state, decision = p.decide_retrain(state, signal, model.retrain, time.time())
        metrics = self.ctx.metrics
        if isinstance(d.data, ev.DataArrived):
            metrics.note_data(event.key, event.timestamp)
        if isinstance(decision, p.TrainRequest):
            request = await self.ctx.publish(ev.TrainingRequested(
                idempotency_key=decision.idempotency_key, reason=decision.reason,
                causes=list(decision.causes), data_uris=[b.uri for b in decision.batches],
                data_versions=[b.version for b in decision.batches], rows=decision.rows),
                model.name, event)
            metrics.note_request(request.correlationid, decision.causes)
            log.info("%s: training requested (%s)", model.name, decision.reason)
        elif not isinstance(signal, p.Tick):
            log.info("%s: %s", model.name, decision.reason)
        if isinstance(decision, p.TrainRequest) or not isinstance(signal, p.Tick):
            metrics.decision("retrain", _outcome(decision, state, new_state))
        metrics.trainings_in_flight.labels(model.name).set(1 if new_state.in_flight else 0)
        # Compared with what is stored, not with `state`: after pause/resume `state` is already
        # the new one, and a tick that changes nothing more must still store it.
        if new_state != stored:                        # most ticks change nothing: no write
            self.table[model.name] = new_state.to_dict()

    @staticmethod
    def signal(event: CloudEvent, data: ev.EventData, state: p.ModelState):
        """The policy's view of an event (None: not the trigger's business)."""
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
        return None                                    # promote / rollback: the deployer's

    async def tick(self) -> None:
        """Clock ticks go through the topic, not straight to the table, so that the state is
        only ever written inside the agent that owns its partition. Every model is ticked, also
        one without a time rule: a tick's publish flushes Faust's producer buffer, which holds
        the table's changelog writes, so `loopline status` sees fresh state within a second
        (without ticks the writes waited for the next commit; a test caught that)."""
        for name in self.ctx.models:
            await self.ctx.publish(ev.ClockTicked(), name, None)


def _outcome(decision: p.Decision, before: p.ModelState, after: p.ModelState) -> str:
    """The metrics outcome of one retrain decision (requested / suppressed / duplicate / skipped)."""
    if isinstance(decision, p.TrainRequest):
        return "requested"
    if after.suppressed > before.suppressed:
        return "suppressed"
    return "duplicate" if decision.reason.startswith("duplicate") else "skipped"
