"""`loopline_trainings_in_flight{model}` comes from the worker that owns the model's partition:
after a rebalance, a worker that no longer holds it drops the series instead of reporting its
last value forever beside the new owner's."""

from __future__ import annotations

import asyncio

from faust.types import TP

from agents.trigger import TICK_SUBJECT, Trigger, state_changelog
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Table, context

NAMES = ["clf", "churn", "fraud", "ltv", "ranker", "spam"]


def trigger_of(tmp_path) -> Trigger:
    raw = {"models": [{"name": name, "retrain": {"min_new_rows": 1},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}
                      for name in NAMES]}
    table = Table()
    return Trigger(context(config.parse(raw, tmp_path / "loopline.yaml"), table), table)


def handle(trigger: Trigger, event) -> None:
    asyncio.run(trigger.handle(decode(encode(event))))


def in_flight(trigger: Trigger) -> dict[str, float | None]:
    """The gauge per model as /metrics shows it (None: no series)."""
    registry = trigger.ctx.metrics.registry
    return {name: registry.get_sample_value("loopline_trainings_in_flight", {"model": name})
            for name in NAMES}


def held(trigger: Trigger, *partitions: int) -> set[TP]:
    """An assignment as Faust hands it over: every input topic of the trigger, plus a changelog."""
    return {TP(topic, p) for topic in (*trigger.inputs(), state_changelog("g"))
            for p in partitions}


def test_a_worker_that_loses_a_partition_drops_the_in_flight_gauge_of_its_models(tmp_path):
    trigger = trigger_of(tmp_path)
    on = {p: set(trigger.models_on(p)) for p in range(TOPICS.partitions)}
    assert all(on.values())                          # both partitions have models
    for name in NAMES:
        handle(trigger, build(ev.DataArrived(uri="file:///b", rows=5, version="v1"), name,
                              source="tests"))
    assert in_flight(trigger) == {name: 1.0 for name in NAMES}

    trigger.partitions_assigned(held(trigger, 0, 1))    # a rebalance that changed nothing here
    assert in_flight(trigger) == {name: 1.0 for name in NAMES}

    trigger.partitions_assigned(held(trigger, 0))       # partition 1 went to another worker
    assert in_flight(trigger) == {name: 1.0 if name in on[0] else None for name in NAMES}

    trigger.partitions_assigned(set())                  # this worker holds nothing any more
    assert in_flight(trigger) == {name: None for name in NAMES}

    trigger.partitions_assigned(held(trigger, 1))       # partition 1 back: the state reports again
    handle(trigger, build(ev.ClockTicked(partition=1), TICK_SUBJECT, source="tests"))
    assert in_flight(trigger) == {name: 1.0 if name in on[1] else None for name in NAMES}


def test_only_the_trigger_topics_say_which_models_a_worker_holds(tmp_path):
    """Another agent's topic (training requests, the trainer's) on partition 1 is no claim on
    the models of partition 1."""
    trigger = trigger_of(tmp_path)
    for name in NAMES:
        trigger.ctx.metrics.trainings_in_flight.labels(name).set(1)
    trigger.partitions_assigned({TP(TOPICS.training_requests, 1), *held(trigger, 0)})
    on0 = set(trigger.models_on(0))
    assert in_flight(trigger) == {name: 1.0 if name in on0 else None for name in NAMES}
