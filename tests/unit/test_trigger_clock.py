"""The clock: one tick per partition of the clock topic, standing for the models on it."""

from __future__ import annotations

import asyncio

from agents.trigger import TICK_SUBJECT, Trigger
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Table, context

NAMES = ["clf", "churn", "fraud", "ltv", "ranker", "spam"]


def run(coro):
    return asyncio.run(coro)


class Clock:
    """The trigger's clock, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def trigger_of(tmp_path, clock=None) -> Trigger:
    raw = {"models": [{"name": name, "retrain": {"min_new_rows": 1, "in_flight_timeout_seconds": 600},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}
                      for name in NAMES]}
    table = Table()
    return Trigger(context(config.parse(raw, tmp_path / "loopline.yaml"), table), table,
                   now=clock or Clock())


def test_a_partition_tick_stands_for_exactly_the_models_on_its_partition(tmp_path):
    """A tick on partition p runs the time rules of the models whose events land on p, and of
    no other: here it gives up on their trainings whose end never came."""
    clock = Clock()
    trigger = trigger_of(tmp_path, clock)
    on = {p: trigger.models_on(p) for p in range(TOPICS.partitions)}
    assert sorted(sum(on.values(), [])) == sorted(NAMES) and all(on.values())    # each once
    assert all(TOPICS.partition_of(name) == p for p, group in on.items() for name in group)
    for name in NAMES:
        run(trigger.handle(decode(encode(build(ev.DataArrived(uri="file:///b", rows=5, version="v1"),
                                               name, source="tests")))))
    assert all(trigger.table[name]["in_flight"] for name in NAMES)

    def tick(partition: int):
        event = build(ev.ClockTicked(partition=partition), TICK_SUBJECT, source="tests")
        run(trigger.handle(decode(encode(event))))

    clock.now += 599                                # not yet: a tick changes nothing
    tick(0)
    tick(1)
    assert all(trigger.table[name]["in_flight"] for name in NAMES)
    clock.now += 1                                  # every in-flight timeout is up
    tick(0)
    assert {name for name in NAMES if trigger.table[name]["in_flight"] is None} == set(on[0])
    tick(1)
    assert all(trigger.table[name]["in_flight"] is None for name in NAMES)


def test_the_worker_ticks_every_partition_of_the_clock_topic_once(tmp_path):
    trigger = trigger_of(tmp_path)
    run(trigger.tick())
    producer = trigger.ctx.app.producer
    ticks = [(decode(value), partition) for (topic, value), partition
             in zip(producer.sent, producer.partitions) if topic == TOPICS.clock]
    assert sorted(partition for _, partition in ticks) == list(range(TOPICS.partitions))
    assert all(d.data.partition == partition and d.event.subject == TICK_SUBJECT
               for d, partition in ticks)
