"""Every policy decision on the record: for each branch of the retrain reducer, the metric guard
and the drift monitor, the `DecisionRecorded` it leaves (outcome, reason, the signal it decided
on), sent fire-and-forget: a skipped event adds no ack wait to the trigger's path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import pytest

from agents.drift import DriftMonitor
from agents.guard import MetricGuard
from agents.ports import Champion, DriftResult, NoReference
from agents.trigger import Trigger
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Table, context

MODEL = "clf"
T0 = 1_700_000_000.0


def run(coro):
    return asyncio.run(coro)


def models_of(tmp_path, **extra):
    raw = {"models": [{"name": MODEL, "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]},
                       "retrain": {"min_new_rows": 1000, "cooldown_seconds": 60, "min_drift_share": 0.3,
                                   "in_flight_timeout_seconds": 600},
                       **extra}]}
    return config.parse(raw, tmp_path / "loopline.yaml")


class Loop:
    """One trigger (with its metric guard) fed events by a test; the clock moved by the test."""

    def __init__(self, tmp_path):
        models = models_of(tmp_path, metrics={"floor": 0.8, "min_count": 20, "rollback_guard_seconds": 300})
        table, guard_table = Table(), Table()
        self.ctx = context(models, table, guard_table)
        self.now = T0
        self.trigger = Trigger(self.ctx, table, guard=MetricGuard(self.ctx, guard_table), now=lambda: self.now)
        self.n = 0

    def send(self, data: ev.EventData, subject: str = MODEL):
        self.n += 1
        event = build(data, subject, source="tests", id=f"e{self.n}")
        run(self.trigger.handle(decode(encode(event))))
        return event

    def data(self, rows: int):
        return self.send(ev.DataArrived(uri=f"file:///b{self.n}", rows=rows, version=f"b{self.n}"))

    def drift(self, share: float = 0.5):
        return self.send(ev.DriftDetected(dataset_version="b", reference_version="a", drift_share=share))

    def finished(self, ok: bool = True):
        key = self.requests()[-1].data["idempotency_key"]
        data = (ev.TrainingSucceeded(idempotency_key=key, run_name="r") if ok else
                ev.TrainingFailed(idempotency_key=key, run_name="r", reason="exit 1"))
        return self.send(data)

    def command(self, command: str):
        return self.send(ev.OperatorCommand(command=command, reason="incident 7", operator="alice"))

    def tick(self):
        return self.send(ev.ClockTicked(partition=TOPICS.partition_of(MODEL)), subject="*")

    def deployed(self, version: str, previous: str | None = None):
        return self.send(ev.DeploymentDone(version=version, previous_version=previous))

    def window(self, value: float, version: str = "2", count: int = 50):
        return self.send(ev.MetricReported(metric="accuracy", value=value, count=count, model_version=version,
                                           window_start=0.0, window_end=60.0))

    def requests(self) -> list:
        return self.ctx.app.producer.events(TOPICS.training_requests)

    def decisions(self, signal=None) -> list:
        out = self.ctx.app.producer.events(TOPICS.decisions)
        return [d for d in out if signal is None or d.data["signal_id"] == signal.id]


@dataclass(frozen=True)
class Case:
    steps: Callable[[Loop], object]     # drives the loop; returns the signal under test
    outcome: str
    reason: str                         # a part of the policy's sentence
    policy: str = "retrain"
    requested: bool = False
    before: tuple[str, ...] = ()        # outcomes of earlier decisions on the same signal
    more: tuple[str, ...] = ()          # ...and of later ones (the metric guard's retrain signal)


def _pause_then_drift(loop: Loop):
    loop.command("pause")
    return loop.drift()


def _in_flight_then_drift(loop: Loop):
    loop.data(1000)
    return loop.drift()


def _cooldown(loop: Loop):
    loop.data(1000)
    loop.finished()
    loop.now += 10
    return loop.drift()


def _duplicate(loop: Loop):
    first = loop.data(10)
    run(loop.trigger.handle(decode(encode(first))))
    return first


def _resume_with_follow_up(loop: Loop):
    loop.command("pause")
    loop.data(1000)                     # wanted, but paused: queued
    return loop.command("resume")


def _follow_up_on_tick(loop: Loop):
    loop.data(1000)
    loop.data(1000)                     # in flight: queued
    loop.finished()                     # cooldown holds the follow-up
    loop.now += 61
    return loop.tick()


def _give_up_on_tick(loop: Loop):
    loop.data(1000)
    loop.drift()                        # in flight: queued, and no new data after it
    loop.now += 601                     # the training's end never came
    return loop.tick()


def _drop_follow_up_when_finished(loop: Loop):
    loop.data(1000)
    loop.drift()
    return loop.finished()


def _rollback(loop: Loop):
    loop.deployed("1")
    loop.window(0.95, version="1")
    loop.deployed("2", previous="1")
    return loop.window(0.5)


CASES = {
    "data-below-min-new-rows": Case(lambda loop: loop.data(400), "skipped", "400/1000 new rows"),
    "data-enough-rows": Case(lambda loop: loop.data(1000), "requested", "training requested (data): 1000 new rows",
                             requested=True),
    "drift-below-min-share": Case(lambda loop: loop.drift(0.1), "skipped", "drift share 0.1 < 0.3"),
    "drift-requests": Case(lambda loop: loop.drift(0.5), "requested", "training requested (drift)", requested=True),
    "drift-while-in-flight": Case(_in_flight_then_drift, "suppressed", "training in flight; queued follow-up"),
    "drift-in-cooldown": Case(_cooldown, "suppressed", "cooldown: 50.0s left; queued"),
    "drift-while-paused": Case(_pause_then_drift, "suppressed", "paused"),
    "redelivered-event": Case(_duplicate, "duplicate", "duplicate event tests#e1", before=("skipped",)),
    "training-finished-nothing-queued": Case(lambda loop: (loop.data(1000), loop.finished(False))[1],
                                             "skipped", "training failed; nothing queued"),
    "manual-retrain": Case(lambda loop: loop.command("retrain"), "requested", "training requested (manual)",
                           requested=True),
    "pause": Case(lambda loop: loop.command("pause"), "paused", "pause by alice (incident 7); nothing due"),
    "resume-nothing-due": Case(lambda loop: (loop.command("pause"), loop.command("resume"))[1], "resumed",
                               "resume by alice (incident 7); nothing due"),
    "resume-sends-the-follow-up": Case(_resume_with_follow_up, "requested", "resume by alice (incident 7); "
                                       "training requested (followup:data)", requested=True),
    "tick-sends-a-follow-up": Case(_follow_up_on_tick, "requested", "training requested (followup:data)",
                                   requested=True),
    "tick-gives-up-on-a-lost-training": Case(_give_up_on_tick, "skipped", "after 600s; nothing due; drift "
                                             "follow-up dropped: no new data since the last request"),
    "finished-drops-a-signal-only-follow-up": Case(_drop_follow_up_when_finished, "skipped", "training succeeded; "
                                                   "nothing queued; drift follow-up dropped"),
    "metric-window-fine": Case(lambda loop: loop.window(0.9), "fine", "accuracy 0.9 over 50 predictions of v2: "
                               "within the floor 0.8", policy="metric"),
    "metric-window-too-small": Case(lambda loop: loop.window(0.1, count=5), "skipped", "fewer than min_count 20",
                                    policy="metric"),
    "metric-window-breaks-the-floor": Case(lambda loop: loop.window(0.5), "retrain", "breaks the floor 0.8",
                                           policy="metric", more=("requested",)),
    "metric-window-rolls-back": Case(_rollback, "rollback", "rollback to v1 requested", policy="metric"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_decision_is_recorded_with_its_outcome_and_reason(tmp_path, case):
    loop = Loop(tmp_path)
    signal = case.steps(loop)
    decisions = loop.decisions(signal)
    assert [x.data["outcome"] for x in decisions] == [*case.before, case.outcome, *case.more]
    first = decisions[len(case.before)]
    d = ev.DecisionRecorded.model_validate(first.data)
    assert (d.policy, d.outcome) == (case.policy, case.outcome), d.reason
    assert case.reason in d.reason
    assert d.signal_type == signal.type
    assert (first.subject, first.causationid, first.correlationid) == (MODEL, signal.id, signal.correlationid)
    requested = [r for r in loop.requests() if r.causationid == signal.id]
    assert d.request_id == (requested[0].id if case.requested else None)


def test_decisions_go_out_without_an_ack_wait_and_a_tick_that_decides_nothing_is_not_one(tmp_path):
    loop = Loop(tmp_path)
    loop.data(400)
    ticks = [loop.tick() for _ in range(5)]
    producer = loop.ctx.app.producer
    assert [t for t, _ in producer.sent if t == TOPICS.decisions] == []      # none awaited
    assert [d.data["outcome"] for d in loop.decisions()] == ["skipped"]
    assert not any(loop.decisions(t) for t in ticks)


def test_a_record_the_broker_refuses_is_counted_and_the_agent_goes_on(tmp_path):
    loop = Loop(tmp_path)

    async def refused(*args):
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("broker said no"))
        return failed

    loop.ctx.app.producer.send = refused
    loop.data(400)
    loop.data(700)                                        # 1100 rows: still requested
    assert len(loop.requests()) == 1
    lost = loop.ctx.metrics.records_lost.labels(ev.DecisionRecorded.TYPE)._value.get()
    assert lost == 2


# --- the drift monitor ------------------------------------------------------------------------

class Registry:
    def __init__(self, champion: str | None):
        self.version = champion

    def champion(self, model, alias):
        return Champion(self.version)


class Checker:
    def __init__(self, result: DriftResult | Exception):
        self.result = result

    async def check(self, request):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _result(drifted: int, of: int, share: float) -> DriftResult:
    columns = {f"f{i}": {"drifted": i < drifted, "score": 0.1, "method": "ks", "threshold": 0.05}
               for i in range(of)}
    return DriftResult(drifted=share >= 0.5, drift_share=share, columns=columns, reference_version="b0", rows=100)


DRIFT_CASES = {
    "clean-batch": ("3", _result(1, 10, 0.1), "no_drift",
                    "no drift in b7 against v3's reference: share of drifted columns 0.10 < 0.5 (1 of 10 drifted)"),
    "no-champion": (None, _result(0, 1, 0.0), "skipped", "not checked for drift: no champion to compare with"),
    "no-reference": ("3", NoReference("v3 has no reference"), "skipped", "not checked for drift: v3 has no reference"),
}


@pytest.mark.parametrize("champion, result, outcome, reason", DRIFT_CASES.values(), ids=DRIFT_CASES.keys())
def test_a_drift_check_that_finds_no_drift_is_a_decision_too(tmp_path, champion, result, outcome, reason):
    ctx = context(models_of(tmp_path, drift={"predictions": False}))
    ctx.registry = Registry(champion)
    monitor = DriftMonitor(ctx, Checker(result))
    batch = build(ev.DataArrived(uri="file:///b7", rows=100, version="b7"), MODEL, source="tests")
    run(monitor.handle(decode(encode(batch))))
    [d] = ctx.app.producer.events(TOPICS.decisions)
    assert (d.data["policy"], d.data["outcome"], d.data["reason"]) == ("drift", outcome, reason)
    assert (d.causationid, d.data["signal_id"], d.data["signal_type"]) == (batch.id, batch.id, batch.type)


def test_a_drifted_batch_leaves_its_drift_event_and_no_second_record(tmp_path):
    ctx = context(models_of(tmp_path, drift={"predictions": False}))
    ctx.registry = Registry("3")
    monitor = DriftMonitor(ctx, Checker(_result(6, 10, 0.6)))
    batch = build(ev.DataArrived(uri="file:///b7", rows=100, version="b7"), MODEL, source="tests")
    run(monitor.handle(decode(encode(batch))))
    assert [e.causationid for e in ctx.app.producer.events(TOPICS.drift)] == [batch.id]
    assert ctx.app.producer.events(TOPICS.decisions) == []
