"""Re-keying (agents.rekey), driven without a broker: which records move, and what moving keeps.

The route is a pure function of (topic, partition, subject); the wrapped handlers run with their
real Context and Edge, Faust's producer a recorder (tests.unit.agent_doubles), and the record
Faust would be handling given explicitly.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents.edge import PermanentError
from agents.operator import OperatorGate
from agents.rekey import FROM_HEADER, Rekey, Route
from agents.trigger import Trigger
from loopline import config
from streams import events as ev
from streams import signing
from streams.codec import build, decode, encode, encode_headers
from tests.unit.agent_doubles import TOPICS, context

HOME = TOPICS.partition_of("clf")
AWAY = 1 - HOME                      # TOPICS has two partitions
KEY = signing.OperatorKey("alice-1", "alice", b"alice-secret-0123456789")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def models(tmp_path: Path):
    raw = {"models": [{"name": "clf", "retrain": {"min_new_rows": 100},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}]}
    return config.parse(raw, tmp_path / "loopline.yaml")


@pytest.mark.parametrize("topic, partition, subject, expected", [
    pytest.param(TOPICS.data, HOME, "clf", None, id="data on its partition: handled"),
    pytest.param(TOPICS.data, AWAY, "clf", (TOPICS.inputs_rekeyed, HOME), id="data elsewhere"),
    pytest.param(TOPICS.drift, AWAY, "clf", (TOPICS.inputs_rekeyed, HOME), id="drift elsewhere"),
    pytest.param(TOPICS.metrics, AWAY, "clf", (TOPICS.inputs_rekeyed, HOME), id="metric elsewhere"),
    pytest.param(TOPICS.operator, AWAY, "clf", (TOPICS.operator_rekeyed, HOME),
                 id="operator command elsewhere: to the gate's own re-key topic"),
    pytest.param(TOPICS.operator, HOME, "clf", None, id="operator command on its partition"),
    pytest.param(TOPICS.data, AWAY, "nope", None, id="unknown model: the first reader dead-letters"),
    pytest.param(TOPICS.inputs_rekeyed, HOME, "clf", None, id="a forwarded copy: handled"),
    pytest.param(TOPICS.training, AWAY, "clf", None, id="loopline's own topic: never moved"),
    pytest.param(TOPICS.clock, AWAY, "*", None, id="a partition's tick: not about one model"),
])
def test_the_route_depends_on_the_topic_the_partition_and_the_subject(models, topic, partition,
                                                                        subject, expected):
    assert Route(TOPICS, models).forward_to(topic, partition, subject) == expected


def message(event, topic: str, partition: int, key: bytes | None, offset: int = 7, headers=None):
    """A consumed record as Faust hands it to an agent."""
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, key=key,
                           value=encode(event), headers=headers or encode_headers())


def arrival(i: int = 1, model: str = "clf"):
    return build(ev.DataArrived(uri=f"file:///b{i}", rows=100, version=f"v{i}"), model,
                 source="tests/any-producer")


def trigger_on(models, current):
    """The trigger as the app wires it: its handler behind the re-keying, `current` the record."""
    ctx = context(models)
    trigger = Trigger(ctx, {})
    return trigger, Rekey(ctx, message=lambda: current[0]).wrap(trigger.handle)


@pytest.mark.parametrize("key", [None, b"some-order-id", b"clf"], ids=["keyless", "other key",
                                                                       "model name"])
def test_an_event_off_its_models_partition_is_forwarded_unchanged_and_no_state_is_touched(
        models, key):
    event, current = arrival(), [None]
    trigger, handle = trigger_on(models, current)
    current[0] = message(event, TOPICS.data, AWAY, key, headers=[("trace", b"abc")])
    run(handle(decode(current[0].value)))
    producer = trigger.ctx.app.producer
    assert trigger.table == {}                              # no state on the wrong partition
    assert producer.sent == [(TOPICS.inputs_rekeyed, current[0].value)]    # the same bytes
    assert producer.partitions == [HOME] and producer.keys == [b"clf"]
    assert producer.headers == [[("trace", b"abc"), (FROM_HEADER, f"{TOPICS.data}:{AWAY}:7".encode())]]
    [rekeyed] = [s for s in trigger.ctx.metrics.registry.collect() if s.name == "loopline_events_rekeyed"]
    assert [(s.labels, s.value) for s in rekeyed.samples if s.name.endswith("_total")] == [
        ({"topic": TOPICS.data}, 1.0)]


@pytest.mark.parametrize("key", [None, b"some-order-id", b"clf"], ids=["keyless", "other key",
                                                                       "model name"])
def test_an_event_on_its_models_partition_is_handled_there_whatever_its_key(models, key):
    event, current = arrival(), [None]
    trigger, handle = trigger_on(models, current)
    current[0] = message(event, TOPICS.data, HOME, key)
    run(handle(decode(current[0].value)))
    [request] = trigger.ctx.app.producer.events(TOPICS.training_requests)
    assert request.data["causes"] == [event.key]
    assert trigger.table["clf"]["in_flight"] == request.data["idempotency_key"]


def test_a_forwarded_event_delivered_twice_is_counted_once(models):
    """At-least-once: a crash after the forward, before the commit, forwards a second copy."""
    event, current = arrival(), [None]
    trigger, handle = trigger_on(models, current)
    for _ in range(2):                                      # the same record, redelivered
        current[0] = message(event, TOPICS.data, AWAY, None)
        run(handle(decode(current[0].value)))
    copies = trigger.ctx.app.producer.sent
    assert len(copies) == 2
    for topic, value in copies:
        current[0] = message(decode(value).event, topic, HOME, b"clf")
        run(handle(decode(value)))
    [request] = trigger.ctx.app.producer.events(TOPICS.training_requests)
    assert request.data["causes"] == [event.key] and request.data["rows"] == 100


def test_an_unknown_model_is_not_forwarded_but_left_to_the_edge_to_dead_letter(models):
    event, current = arrival(model="nope"), [None]
    trigger, handle = trigger_on(models, current)
    current[0] = message(event, TOPICS.data, AWAY, None)
    with pytest.raises(PermanentError, match="unknown model"):
        run(handle(decode(current[0].value)))
    assert trigger.ctx.app.producer.sent == []


def test_a_direct_call_outside_a_stream_is_handled(models):
    trigger, handle = trigger_on(models, [None])
    run(handle(decode(encode(arrival()))))
    assert len(trigger.ctx.app.producer.events(TOPICS.training_requests)) == 1


def test_the_gate_checks_a_command_only_on_its_models_partition(models, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({KEY.key_id: {"operator": KEY.operator, "secret": KEY.secret.decode()}}))
    ctx, current = context(models), [None]
    gate = OperatorGate(ctx, {}, signing.KeyFile(keys))
    handle = Rekey(ctx, message=lambda: current[0]).wrap(gate.handle)
    event = signing.sign(build(ev.OperatorCommand(command="retrain", reason="t", operator="alice"),
                               "clf", source="some/other/client"), KEY, now=time.time())
    current[0] = message(event, TOPICS.operator, AWAY, None)
    run(handle(decode(current[0].value)))
    assert gate.table == {} and ctx.app.producer.events(TOPICS.operator_verified) == []
    [(topic, value)] = ctx.app.producer.sent
    assert topic == TOPICS.operator_rekeyed and ctx.app.producer.partitions == [HOME]
    current[0] = message(decode(value).event, topic, HOME, b"clf")
    run(handle(decode(value)))
    assert ctx.app.producer.events(TOPICS.operator_verified) == [event]    # signature intact
    assert event.key in gate.table["clf"]


def test_the_handler_keeps_its_name_for_the_edges_metrics(models):
    trigger, handle = trigger_on(models, [None])
    assert handle.__qualname__ == "Trigger.handle"
