"""The trigger's outbox: a training request goes out only once the state that remembers it is
durable, so a worker that replays events after a crash, in whatever order, never puts one
input event into two trainings, and a request stored but never sent is sent by the next worker."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import pytest

from agents.trigger import OUTBOX, Trigger
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Producer, Table, context


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def models(tmp_path):
    raw = {"models": [{"name": "clf", "retrain": {"min_new_rows": 100},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}]}
    return config.parse(raw, tmp_path / "loopline.yaml")


def worker(models, table: Table) -> Trigger:
    """A trigger process: its own producer, the table as it was restored."""
    return Trigger(context(models, table), table)


def arrival(i: int):
    return build(ev.DataArrived(uri=f"file:///b{i}", rows=100, version=f"v{i}"), "clf", source="tests")


def failed(request):
    return build(ev.TrainingFailed(idempotency_key=request.data["idempotency_key"], run_name="r",
                                   reason="exit 1"), "clf", source="tests/trainer")


def tick():
    return build(ev.ClockTicked(), "clf", source="tests/clock")


def handle(trigger: Trigger, *events) -> None:
    for event in events:
        run(trigger.handle(decode(encode(event))))


def requests(*triggers: Trigger) -> list:
    return [r for t in triggers for r in t.ctx.app.producer.events(TOPICS.training_requests)]


def test_a_request_goes_out_only_after_the_state_that_remembers_it_is_durable(models):
    a = worker(models, Table())
    first = arrival(1)
    handle(a, first, arrival(2))
    [request] = requests(a)
    handle(a, failed(request))                          # follow-up for the queued arrival 2
    producer = a.ctx.app.producer
    sent = [(i, decode(value).event) for i, (topic, value) in enumerate(producer.sent)
            if topic == TOPICS.training_requests]
    assert len(sent) == 2
    for index, request in sent:
        [durable] = producer.durable_at_send[index]
        assert durable["clf"]["in_flight"] == request.data["idempotency_key"]
        assert durable["clf"][OUTBOX]["id"] == request.id
    assert OUTBOX not in a.table["clf"]                 # out: a clean restart sends nothing again
    run(producer.flush())
    b = worker(models, Table(a.table.durable))
    handle(b, tick())
    assert requests(b) == []


def test_a_replay_in_any_order_after_a_crash_puts_no_event_in_two_trainings(models):
    """Worker A: e1 → R1; e2 queued; R1 fails → R2 = {e2}; A dies right after sending R2.
    Worker B restores the durable table and gets e1, e2, R1's end and a new e3 in every order:
    e3 must never join e2 in a second request (it did when the request went out first)."""
    table = Table()
    a = worker(models, table)
    e1, e2, e3 = arrival(1), arrival(2), arrival(3)
    handle(a, e1, e2)
    [r1] = requests(a)
    handle(a, failed(r1))
    r2 = requests(a)[-1]
    [restored] = a.ctx.app.producer.durable_at_send[-1]
    for order in itertools.permutations([e1, e2, e3, failed(r1)]):
        b = worker(models, Table(restored))
        handle(b, *order)
        handle(b, failed(r2))                           # the training A started ends
        trainings = defaultdict(set)
        for request in requests(a, b):
            trainings[request.data["idempotency_key"]].update(request.data["causes"])
        owners = defaultdict(set)
        for key, causes in trainings.items():
            for cause in causes:
                owners[cause].add(key)
        assert {cause: len(keys) for cause, keys in owners.items()} == {
            e1.key: 1, e2.key: 1, e3.key: 1}, [e.type for e in order]


class DiesBeforeSending(Producer):
    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):
        raise ConnectionError("worker killed")


def test_a_request_stored_but_never_sent_is_sent_by_the_next_worker_once(models):
    table = Table()
    a = worker(models, table)
    a.ctx.app.producer = DiesBeforeSending(table)
    with pytest.raises(ConnectionError):
        handle(a, arrival(1))
    stored = table.durable["clf"][OUTBOX]

    b = worker(models, Table(table.durable))
    handle(b, tick(), tick(), tick())
    [request] = requests(b)
    assert request.id == stored["id"] and request.data == stored["data"]   # the same request

    handle(b, failed(request))                          # its end: nothing left to send
    assert OUTBOX not in b.table["clf"]
    c = worker(models, Table(b.table))
    handle(c, tick())
    assert requests(c) == []
