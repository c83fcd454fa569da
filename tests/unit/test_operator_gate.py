"""The operator gate and the trigger's pause/resume, driven with decoded events (no broker).

The agents run with their real Context and Edge; only Faust's producer is a recorder and the
tables are dicts (tests.unit.agent_doubles), so what is asserted is exactly what would be published.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.context import Context
from agents.edge import PermanentError
from agents.operator import CommandRejected, OperatorGate, remember
from agents.trigger import Trigger, state_changelog, state_table
from loopline import config
from streams import events as ev
from streams import signing
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, context

KEY = signing.OperatorKey("alice-1", "alice", b"alice-secret-0123456789")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    raw = {"models": [{"name": "clf", "retrain": {"min_new_rows": 500},
                       "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}]}
    return context(config.parse(raw, tmp_path / "loopline.yaml"))


@pytest.fixture
def keys(tmp_path: Path) -> signing.KeyFile:
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps({KEY.key_id: {"operator": KEY.operator, "secret": KEY.secret.decode()}}))
    return signing.KeyFile(path)


def command(name: str = "retrain", model: str = "clf", key=KEY, now: float | None = None):
    event = build(ev.OperatorCommand(command=name, reason="test", operator=key.operator), model,
                  source="loopline/cli/alice")
    return signing.sign(event, key, now=now or time.time())


def run(coro):
    return asyncio.run(coro)


def test_remember_keeps_unexpired_ids_and_a_bounded_number():
    seen = remember({"old": 10.0, "live": 200.0}, "new", 300.0, now=100.0)
    assert seen == {"live": 200.0, "new": 300.0}                    # "old" expired: safe to drop
    many = {f"k{i}": 1000.0 + i for i in range(5)}
    assert list(remember(many, "new", 2000.0, now=0.0, limit=3)) == ["k3", "k4", "new"]


def test_a_verified_command_is_forwarded_unchanged_once_and_its_replay_is_refused(ctx, keys):
    gate, table = OperatorGate(ctx, {}, keys), {}
    gate.table = table
    event = command()
    run(gate.handle(decode(encode(event))))
    forwarded = ctx.app.producer.events(TOPICS.operator_verified)
    assert forwarded == [event]                                      # same id, same signature
    assert event.key in table["clf"]
    with pytest.raises(CommandRejected, match="replayed operator command"):
        run(gate.handle(decode(encode(event))))
    assert len(ctx.app.producer.events(TOPICS.operator_verified)) == 1
    samples = {s.labels["outcome"]: s.value for s in ctx.metrics.operator_commands.collect()[0].samples
               if s.labels["command"] == "retrain" and s.name.endswith("_total")}
    assert samples["accepted"] == 1 and samples["replayed"] == 1


@pytest.mark.parametrize("event, phrase", [
    pytest.param(build(ev.OperatorCommand(command="pause", reason="x", operator="alice"), "clf",
                       source="x"), "unsigned", id="unsigned"),
    pytest.param(command(key=replace(KEY, secret=b"guessed-secret-000000")), "bad signature", id="forged"),
    pytest.param(command(now=time.time() - 3600), "expired", id="expired"),
])
def test_an_untrusted_command_is_rejected_and_forwards_nothing(ctx, keys, event, phrase):
    gate = OperatorGate(ctx, {}, keys)
    with pytest.raises(CommandRejected, match=phrase):
        run(gate.handle(decode(encode(event))))
    assert ctx.app.producer.sent == [] and gate.table == {}
    assert issubclass(CommandRejected, PermanentError)               # the edge dead-letters it


def test_without_keys_every_command_is_refused(ctx):
    with pytest.raises(CommandRejected, match="no operator keys configured"):
        run(OperatorGate(ctx, {}, signing.KeyFile(None)).handle(decode(encode(command()))))


def test_a_command_for_an_unknown_model_is_a_permanent_error(ctx, keys):
    with pytest.raises(PermanentError, match="unknown model"):
        run(OperatorGate(ctx, {}, keys).handle(decode(encode(command(model="nope")))))


def test_pause_is_stored_suppresses_data_and_resume_requests_the_pending_training_once(ctx, tmp_path):
    table: dict = {}
    trigger = Trigger(ctx, table)
    requests = lambda: ctx.app.producer.events(TOPICS.training_requests)  # noqa: E731

    run(trigger.handle(decode(encode(command("pause")))))
    assert table["clf"]["paused"] is True        # stored, though the tick after it changed nothing
    arrivals = [build(ev.DataArrived(uri=f"file:///b{i}", rows=600, version=f"v{i}"), "clf",
                      source="tests") for i in range(3)]
    for arrival in arrivals:
        run(trigger.handle(decode(encode(arrival))))
    assert requests() == []
    assert table["clf"]["suppressed"] == 3 and list(table["clf"]["pending"]) == ["data"]
    tick = build(ev.ClockTicked(), "clf", source="tests")
    run(trigger.handle(decode(encode(tick))))
    assert requests() == []                      # the clock does not sneak past a pause

    run(trigger.handle(decode(encode(command("resume")))))
    [request] = requests()
    assert request.data["reason"] == "followup:data"
    assert set(request.data["causes"]) == {a.key for a in arrivals}
    for _ in range(3):
        run(trigger.handle(decode(encode(build(ev.ClockTicked(), "clf", source="tests")))))
    assert len(requests()) == 1
    decisions = {s.labels["outcome"]: s.value for s in ctx.metrics.decisions.collect()[0].samples
                 if s.labels["decision"] == "retrain" and s.name.endswith("_total")}
    assert decisions["suppressed"] == 3 and decisions["requested"] == 1


def test_a_manual_retrain_still_works_while_paused(ctx):
    table: dict = {}
    trigger = Trigger(ctx, table)
    run(trigger.handle(decode(encode(command("pause")))))
    run(trigger.handle(decode(encode(command("retrain")))))
    [request] = ctx.app.producer.events(TOPICS.training_requests)
    assert request.data["reason"] == "manual" and table["clf"]["paused"] is True


def test_the_state_changelog_name_is_fausts():
    assert state_table("g") == "g-model-state"
    assert state_changelog("g") == "g-g-model-state-changelog"      # <app id>-<table>-changelog
