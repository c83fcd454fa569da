"""The trigger agent: data, drift, operator, clock and training outcomes → training requests.

It keeps one `ModelState` per model in a Faust table (changelogged, so it survives restarts)
and hands every event to the pure `decide_retrain` reducer. It sees a model's events only on the
model's partition (`Topics.partition_of`), whoever produced them: `agents.rekey` forwards the
others onto it first, so the table entry is written to one changelog partition only.

A request goes out through an outbox: the new state is stored together with the request, the
changelog is flushed, and only then is the request published. Why not publish first and store
after (as this agent once did): the trigger reads several topics, and after a crash the events
since the last stored state are replayed in another interleaving. A request built from
{e1, e2} could already be out while the replay builds {e1, e2, e3}: one event in two trainings
(the worker-kill fault test caught it). With the outbox, a request that is out is always in the
stored state, so a replay finds it in flight; a request stored but not yet out (a crash between
flush and publish) is sent again by whichever worker next handles that model, with the same
event id and idempotency key, and the trainer's run name makes a second launch a no-op.
The crash points `trigger.outbox-flushed` and `trigger.request-published` (agents.faults) sit
on either side of the publish; `tests/faults/test_crash.py` kills the worker at each.

Every decision on a signal (data, drift, metric, operator retrain / pause / resume, a training's
end) is put on the record as a `DecisionRecorded` with the reducer's reason, skips included, and
so is a clock tick's when it changed something (sent a follow-up, dropped one, gave up on a lost
training); a tick that decides nothing is left out. Records are handed to the producer without
an ack wait (`Context.record`): the only waits on this path stay the request's flush and ack.

`loopline_trainings_in_flight{model}` is set by the worker that owns the model's partition; a
worker that loses the partition drops the model's series (`partitions_assigned`), or it would
report its last value forever beside the new owner's.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import replace
from typing import Callable, Iterable

from agents import policies as p
from agents.context import Context
from agents.faults import crash_point
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent, utc_now

log = logging.getLogger("loopline.trigger")

OUTBOX = "outbox"      # table field beside the ModelState's: the request that state decided
TICK_SUBJECT = "*"     # a partition's tick is about every model on the partition


def state_table(group: str) -> str:
    """Name of the Faust table of ModelStates (`loopline status` reads its changelog)."""
    return f"{group}-model-state"


def state_changelog(group: str) -> str:
    """Faust names a table's changelog topic `<app id>-<table name>-changelog`."""
    return f"{group}-{state_table(group)}-changelog"


class Trigger:
    def __init__(self, ctx: Context, table, guard=None, now: Callable[[], float] = time.time):
        self.ctx, self.table = ctx, table
        self.guard = guard          # agents.guard.MetricGuard: metric windows and deployments
        self.now = now              # the policy's clock (epoch seconds): a test's to move
        self._partitions: dict[int, list[str]] = {}     # partition -> models, indexed as they come
        self._home: dict[str, int] = {}                  # model -> its partition (the same index)
        self._indexed = 0                                # how many of ctx.models are in it
        self._awake: dict[int, set[str]] = {}            # partition -> models a tick can change
        self._held: set[int] | None = None               # partitions held (None: not told yet: all)
        self._learn = True                               # read the table at the next tick

    def state(self, model: str) -> p.ModelState:
        return _state_of(self.table.get(model))

    async def handle(self, d: Decoded) -> None:
        if isinstance(d.data, ev.ClockTicked) and d.data.partition is not None:
            if self._learn:
                self.learn_from_state()
            # a partition's tick: those of its models it can change (p.wants_ticks), not all
            for name in sorted(self._awake.get(d.data.partition, ())):
                await self._handle(d, self.ctx.models[name])
            return
        await self._handle(d, self.ctx.model(d.event))

    def models_on(self, partition: int) -> list[str]:
        """The models whose events (and so whose state) live on `partition`."""
        models, topics = self.ctx.models, self.ctx.opts.topics
        if len(models) != self._indexed:       # new family members since: index only those
            for name in itertools.islice(models, self._indexed, None):
                home = self._home[name] = topics.partition_of(name)
                self._partitions.setdefault(home, []).append(name)
            self._indexed = len(models)
        return self._partitions.get(partition, [])

    def partition(self, model: str) -> int:
        if model not in self._home:
            self.models_on(0)                  # index what came since
        return self._home[model]

    def learn_from_state(self) -> None:
        """Read every state this worker holds once, after an assignment: which models a tick can
        change (the recovered state decides, not an event), their in-flight gauges, and the family
        members they are. A member's state is back from the changelog before any of its events
        is, and its timeouts, staleness and a stranded outbox must not wait for one. Run at the
        first tick after an assignment: the agent only gets events once recovery is done."""
        self._learn = False
        known, gauge = self.ctx.models, self.ctx.metrics.trainings_in_flight
        self._awake = {}
        for name, raw in list(self.table.items()):
            if name not in known:     # a Catalog adds the member; a name no longer configured stays out
                log.debug("%s: no longer configured; its state is kept but not ticked", name)
                continue
            if self._held is not None and self.partition(name) not in self._held:
                continue                           # a standby copy: another worker's to tick
            state = _state_of(raw)
            self._mark(known[name], state, stranded=bool(raw) and OUTBOX in raw)
            gauge.labels(name).set(1 if state.in_flight else 0)

    def _mark(self, model, state: p.ModelState, stranded: bool = False) -> None:
        """Keep `model` in its partition's ticks while a tick can change its state."""
        awake = self._awake.setdefault(self.partition(model.name), set())
        if stranded or p.wants_ticks(state, model.retrain):
            awake.add(model.name)
        else:
            awake.discard(model.name)

    def inputs(self) -> tuple[str, ...]:
        """The topics the trigger agent reads (its state is partitioned as they are)."""
        t = self.ctx.opts.topics
        return (t.data, t.drift, t.operator_verified, t.clock, t.training, t.metrics, t.deployment,
                t.inputs_rekeyed)

    def partitions_assigned(self, assigned: Iterable[tuple[str, int]]) -> None:
        """After a rebalance this worker holds the (topic, partition) pairs `assigned` and no
        others. The in-flight gauge of a model on a partition it does not hold is the new
        owner's to report: the series leaves this worker. Not done on revocation: aiokafka
        revokes every partition at each rebalance, those that come straight back too."""
        self._learn = True
        inputs = set(self.inputs())
        held = self._held = {partition for topic, partition in assigned if topic in inputs}
        gauge = self.ctx.metrics.trainings_in_flight
        for partition in range(self.ctx.opts.topics.partitions):
            if partition not in held:
                for name in self.models_on(partition):
                    gauge.remove(name)

    async def _handle(self, d: Decoded, model) -> None:
        event, raw = d.event, self.table.get(model.name)
        stored = state = _state_of(raw)
        if raw and OUTBOX in raw:
            await self._send_stranded(model.name, raw[OUTBOX], stored)
        if self.guard is not None and isinstance(d.data, self.guard.HANDLES):
            signal = await self.guard.handle(d, model)     # a bad metric window, or None
        else:
            signal = self.signal(event, d.data, state)
        if signal is None:
            return
        command = None
        if isinstance(signal, p.ModelState):          # pause / resume: new state, then re-check
            command, state, signal = d.data, signal, p.Tick(event.key)
        new_state, decision = p.decide_retrain(state, signal, model.retrain, self.now())
        metrics = self.ctx.metrics
        if isinstance(d.data, ev.DataArrived):
            metrics.note_data(event.key, event.timestamp)
        request = None
        if isinstance(decision, p.TrainRequest):
            request = self.ctx.event(ev.TrainingRequested(
                idempotency_key=decision.idempotency_key, reason=decision.reason,
                causes=list(decision.causes), data_uris=[b.uri for b in decision.batches],
                data_versions=[b.version for b in decision.batches], rows=decision.rows),
                model.name, event)
            self.table[model.name] = {**new_state.to_dict(), OUTBOX: request.to_dict()}
            await self.ctx.app.producer.flush()          # stored before it is out: see above
            crash_point("trigger.outbox-flushed")
            await self._send(request)
            crash_point("trigger.request-published")
            self.table[model.name] = new_state.to_dict()  # out: a restart need not send it again
            metrics.note_request(request.correlationid, decision.causes)
        metrics.trainings_in_flight.labels(model.name).set(1 if new_state.in_flight else 0)
        self._mark(model, new_state)
        # Compared with what is stored, not with `state`: after pause/resume `state` is already
        # the new one, and a tick that changes nothing more must still store it.
        changed = new_state != stored
        if request is None and changed:                 # most ticks: no write
            self.table[model.name] = new_state.to_dict()
        if request is not None or command is not None or changed or not isinstance(signal, p.Tick):
            await self._decided(model.name, event, decision, _outcome(decision, state, new_state, command),
                                request, command)

    async def _decided(self, model: str, signal: CloudEvent, decision: p.Decision, outcome: str,
                       request: CloudEvent | None, command: ev.OperatorCommand | None) -> None:
        """Count, log and record one decision. A clock tick that changed nothing is not one (the
        caller leaves it out): one a second per partition would drown the record."""
        if isinstance(decision, p.TrainRequest):
            reason = (f"training requested ({decision.reason}): {decision.rows} new rows, "
                      f"{len(decision.causes)} triggering event(s)")
        else:
            reason = decision.reason
        if command is not None:
            reason = f"{command.command} by {command.operator} ({command.reason}); {reason}"
        self.ctx.metrics.decision("retrain", outcome)
        log.info("%s: %s%s", model, reason, f" [{request.data['idempotency_key']}]" if request else "")
        await self.ctx.record("retrain", outcome, reason, model, signal,
                              request_id=request.id if request is not None else None)

    async def _send_stranded(self, model: str, outbox: dict, state: p.ModelState) -> None:
        """Publish the stored request of a worker that died between storing and sending it
        (the outbox is emptied once a request is out, so a clean restart finds none). Only while
        it is still the training in flight; a request that was out already is a no-op for the
        trainer."""
        if state.in_flight is None:
            return
        request = CloudEvent.from_dict(outbox)
        if request.data.get("idempotency_key") == state.in_flight:
            log.info("%s: sending the stored request %s again", model, state.in_flight)
            await self._send(request)
            self.table[model] = state.to_dict()

    async def _send(self, request: CloudEvent) -> None:
        # `time` says when it went out (the trigger bench measures up to it); id and key stay.
        await self.ctx.edge.publish(replace(request, time=utc_now()))

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
        """One tick per partition of the clock topic, each standing for the models on it.

        Ticks go through the topic, not straight to the table, so that a state is only ever
        written inside the agent that owns its partition (the tick lands on the partition its
        models' events land on: `Topics.partition_of`). A tick's publish also flushes Faust's
        producer buffer, which holds the table's changelog writes, so `loopline status` sees
        fresh state within a second (without ticks the writes waited for the next commit; a
        test caught that). One tick per model cost O(models) events a second (100 models: ~16%
        of a core in the worker); this costs O(partitions).
        """
        topics = self.ctx.opts.topics
        for partition in range(topics.partitions):
            event = self.ctx.event(ev.ClockTicked(partition=partition), TICK_SUBJECT, None)
            await self.ctx.edge.publish(event, topics.clock, partition)


def _state_of(raw) -> p.ModelState:
    """A table value (ModelState fields, maybe an outbox beside them) as a ModelState."""
    return p.ModelState.from_dict(raw) if raw else p.ModelState()


def _outcome(decision: p.Decision, before: p.ModelState, after: p.ModelState,
             command: ev.OperatorCommand | None = None) -> str:
    """The outcome of one retrain decision: requested, or paused / resumed (an operator's
    command), suppressed (a wanted training blocked and queued), duplicate, skipped."""
    if isinstance(decision, p.TrainRequest):
        return "requested"
    if command is not None:
        return "paused" if command.command == "pause" else "resumed"
    if after.suppressed > before.suppressed:
        return "suppressed"
    return "duplicate" if decision.reason.startswith("duplicate") else "skipped"
