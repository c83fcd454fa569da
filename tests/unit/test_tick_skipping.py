"""The clock ticks only the models a tick can change (agents.policy.retrain.wants_ticks): at
10,000 idle models, ticking every one cost a third of a core and delayed every event behind it."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path

from faust.types import TP

from agents import policies as p
from agents.trigger import TICK_SUBJECT, Trigger
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Table, context

POLICIES = [p.RetrainPolicy(min_new_rows=100, cooldown_seconds=c, max_staleness_seconds=s,
                            in_flight_timeout_seconds=t)
            for c, s, t in itertools.product((0.0, 30.0), (None, 60.0), (None, 120.0))]
STATES = [p.ModelState(new_rows=rows, in_flight=flight, pending=pending, paused=paused, last_request_at=last)
          for rows, flight, pending, paused, last in itertools.product(
              (0, 5), (None, "k1"), ((), ("drift",), ("manual",)), (False, True), (None, 1000.0))]


def test_a_model_left_out_of_the_ticks_is_one_no_tick_could_change():
    """Exactness, over every state shape and policy: whenever wants_ticks says no, a tick at any
    time leaves the state as it is and asks for nothing."""
    left_out = 0
    for policy, state in itertools.product(POLICIES, STATES):
        if p.wants_ticks(state, policy):
            continue
        left_out += 1
        for now in (1000.0, 1001.0, 1031.0, 1061.0, 1121.0, 10_000.0):
            new, decision = p.decide_retrain(state, p.Tick("tick"), policy, now)
            assert new == state and isinstance(decision, p.Skip), (state, policy, now, decision)
    assert left_out > 20                                # the rule leaves most shapes out


def test_one_the_rule_keeps_can_be_changed_by_some_tick():
    for policy, state in itertools.product(POLICIES, STATES):
        if not p.wants_ticks(state, policy) or state.paused or (state.in_flight is None and not state.pending
                                                                  and state.new_rows == 0):
            continue
        outcomes = [p.decide_retrain(state, p.Tick("tick"), policy, now) for now in (1000.0, 10_000.0)]
        assert any(new != state or isinstance(d, p.TrainRequest) for new, d in outcomes), (state, policy)


def handle(trigger: Trigger, event) -> None:
    asyncio.run(trigger.handle(decode(encode(event))))


def test_a_tick_visits_only_the_models_with_something_due():
    names = [f"m{i}" for i in range(40)]
    raw = {"models": [{"name": n, "retrain": {"min_new_rows": 1, "in_flight_timeout_seconds": 60},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}} for n in names]}
    table, now = Table(), [1000.0]
    trigger = Trigger(context(config.parse(raw, Path("/c/loopline.yaml")), table), table, now=lambda: now[0])
    trigger.partitions_assigned({TP(t, q) for t in trigger.inputs() for q in range(TOPICS.partitions)})
    fresh = names[:3]                                     # a training in flight each: it can time out
    for name in fresh:
        handle(trigger, build(ev.DataArrived(uri="file:///b", rows=5, version="v"), name, source="t"))
    visited = []
    original = trigger._handle

    async def spy(d, model):
        visited.append(model.name)
        await original(d, model)
    trigger._handle = spy

    def tick_all() -> list[str]:
        visited.clear()
        for partition in range(TOPICS.partitions):
            handle(trigger, build(ev.ClockTicked(partition=partition), TICK_SUBJECT, source="t"))
        return sorted(visited)

    assert tick_all() == fresh                            # not the 37 with nothing due
    assert all(table[n]["in_flight"] for n in fresh)
    now[0] += 61
    assert tick_all() == fresh and not any(table[n]["in_flight"] for n in fresh)   # timed out
    assert tick_all() == []                               # nothing due any more: left out


def test_a_restarted_worker_ticks_what_its_recovered_state_says_is_due():
    raw = {"models": [{"name": n, "retrain": {"min_new_rows": 100, "in_flight_timeout_seconds": 60},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}} for n in ("a", "b")]}
    models = config.parse(raw, Path("/c/loopline.yaml"))
    lost = replace(p.ModelState(), in_flight="k1", last_request_at=1000.0)
    table = Table({"a": lost.to_dict(), "b": p.ModelState(new_rows=5).to_dict()})
    trigger = Trigger(context(models, table), table, now=lambda: 1061.0)
    trigger.partitions_assigned({TP(t, q) for t in trigger.inputs() for q in range(TOPICS.partitions)})
    handle(trigger, build(ev.ClockTicked(partition=TOPICS.partition_of("a")), TICK_SUBJECT, source="t"))
    assert table["a"]["in_flight"] is None                # timed out on the first tick after restart
    registry = trigger.ctx.metrics.registry
    assert registry.get_sample_value("loopline_trainings_in_flight", {"model": "b"}) == 0.0
