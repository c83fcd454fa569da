"""Model families (agents.catalog, loopline.config): one entry, many members told apart by a key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP

from agents.catalog import Catalog
from agents.edge import PermanentError
from agents.rekey import Route
from agents.trigger import TICK_SUBJECT, Trigger
from loopline import config
from streams import events as ev
from streams.codec import build, decode, encode
from tests.unit.agent_doubles import TOPICS, Table, context

PATH = Path("/cfg/loopline.yaml")


def family(**over):
    base = {"name": "churn", "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]},
            "retrain": {"min_new_rows": 100, "cooldown_seconds": 30}, "params": {"depth": "4", "lr": "0.1"}}
    base.update(over)
    return base


def catalog(*families, models=()) -> Catalog:
    return config.parse({"families": list(families), "models": list(models)}, PATH)


def test_a_member_comes_into_being_on_first_use_with_the_family_settings():
    models = catalog(family())
    assert len(models) == 0 and "churn" not in models      # the family itself is no model
    acme = models["churn.acme"]
    assert (acme.name, acme.family, acme.member) == ("churn.acme", "churn", "acme")
    assert acme.retrain.min_new_rows == 100 and acme.params == {"depth": "4", "lr": "0.1"}
    assert list(models) == ["churn.acme"] and models.members("churn") == ["churn.acme"]
    assert models["churn.acme"] is acme                      # made once, then kept
    models.get("churn.globex")
    assert list(models) == ["churn.acme", "churn.globex"]


def test_listed_members_exist_from_the_start_beside_plain_models():
    plain = {"name": "fraud", "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}
    models = catalog(family(members=["acme", "initech"]), models=[plain])
    assert list(models) == ["fraud", "churn.acme", "churn.initech"]


def test_an_override_changes_its_member_only():
    models = catalog(family(overrides={"acme": {"params": {"lr": "0.5"}, "retrain": {"min_new_rows": 7}}}))
    acme, other = models["churn.acme"], models["churn.other"]
    assert acme.params == {"depth": "4", "lr": "0.5"} and acme.retrain.min_new_rows == 7
    assert acme.retrain.cooldown_seconds == 30                # keys not overridden: the family's
    assert other.params == {"depth": "4", "lr": "0.1"} and other.retrain.min_new_rows == 100
    assert other.pipeline is acme.pipeline                   # shared, not copied per member


@pytest.mark.parametrize("name, reason", [
    ("churn.bad key", "does not match member_pattern"),
    ("churn.", "does not match member_pattern"),
    ("churn." + "x" * 99, "does not match member_pattern"),
    ("fraud.acme", "unknown model 'fraud.acme'"),
    ("acme", "unknown model 'acme'"),
])
def test_a_name_that_is_no_member_has_a_reason(name, reason):
    models = catalog(family())
    assert models.get(name) is None and name not in models
    assert reason in models.problem(name)
    with pytest.raises(PermanentError, match=reason):
        context(models).model(build(ev.DataArrived(uri="file:///b", rows=1, version="v"), name, source="t"))
    assert len(models) == 0


def test_a_family_admits_max_members_then_refuses_with_the_reason():
    models = catalog(family(max_members=2))
    assert models.get("churn.a") and models.get("churn.b")
    assert models.get("churn.c") is None
    assert "reached its max_members (2)" in models.problem("churn.c")
    assert models.get("churn.a") is not None                 # the existing stay


def test_a_custom_member_pattern():
    models = catalog(family(member_pattern=r"cust-[0-9]{4}"))
    assert models.get("churn.cust-0042") is not None and models.get("churn.acme") is None


@pytest.mark.parametrize("raw, message", [
    ({"families": [family(name="churn.eu")]}, "a family name cannot contain '.'"),
    ({"families": [family(members=["ok", "not ok"])]}, "member key 'not ok' does not match"),
    ({"families": [family(members=["a", "a"])]}, "a member is listed twice"),
    ({"families": [family(overrides={"x y": {}})]}, "overrides: member key 'x y'"),
    ({"families": [family(overrides={"acme": {"retrain": {"min_new_rows": 0}}})]},
     "families[0].overrides.acme.retrain.min_new_rows"),
    ({"families": [family(overrides={"acme": {"retrian": {}}})]}, "retrian: unknown key"),
    ({"families": [family(member_pattern="([")]}, "member_pattern: Value error, not a regular expression"),
    ({"families": [family(members=["a", "b", "c"], max_members=2)]}, "above max_members (2)"),
    ({"families": [family(), family()]}, "'churn' is already the name of a model or family"),
    ({"families": [family()], "models": [{"name": "churn.v2", "pipeline": {"steps": [
        {"name": "evaluate", "command": ["true"]}]}}]}, "'churn.v2' would read as a member of family 'churn'"),
    ({"families": [family(gate={"from_step": "score"})]}, "families[0].gate.from_step: no step named 'score'"),
])
def test_family_errors_name_the_key(raw, message):
    with pytest.raises(config.ConfigError) as err:
        config.parse(raw, PATH)
    assert message in str(err.value)


def test_iteration_goes_on_while_members_are_added():
    models = catalog(family())
    models.get("churn.a")
    seen = []
    for name in models:
        seen.append(name)
        if len(seen) < 3:
            models.get(f"churn.n{len(seen)}")
    assert seen == ["churn.a", "churn.n1", "churn.n2"]


def test_the_route_finds_a_new_member_home_and_leaves_no_model_alone():
    models = catalog(family())
    route = Route(TOPICS, models)
    home = TOPICS.partition_of("churn.acme")
    other = 1 - home
    assert route.forward_to(TOPICS.data, other, "churn.acme") == (TOPICS.rekey_topics()[TOPICS.data], home)
    assert route.forward_to(TOPICS.data, home, "churn.acme") is None
    assert route.forward_to(TOPICS.data, other, "churn.bad key") is None    # dead-lettered where it is


def handle(trigger: Trigger, event) -> None:
    asyncio.run(trigger.handle(decode(encode(event))))


def test_the_trigger_ticks_members_made_since_and_those_it_finds_in_its_state():
    models = catalog(family(retrain={"min_new_rows": 100, "in_flight_timeout_seconds": 60}))
    table = Table()
    now = [1000.0]
    trigger = Trigger(context(models, table), table, now=lambda: now[0])
    first = build(ev.DataArrived(uri="file:///b", rows=500, version="v1"), "churn.acme", source="t")
    handle(trigger, first)
    home = TOPICS.partition_of("churn.acme")
    assert trigger.models_on(home) == ["churn.acme"]
    assert table["churn.acme"]["in_flight"]

    # a restarted worker: a new catalog knows no member, the recovered table does
    fresh = catalog(family(retrain={"min_new_rows": 100, "in_flight_timeout_seconds": 60}))
    table2 = Table({**table, "gone.member": {}})              # a family no longer configured
    restarted = Trigger(context(fresh, table2), table2, now=lambda: now[0])
    restarted.partitions_assigned({TP(topic, home) for topic in restarted.inputs()})
    now[0] += 61                                              # the training was lost
    handle(restarted, build(ev.ClockTicked(partition=home), TICK_SUBJECT, source="t"))
    assert list(fresh) == ["churn.acme"] and restarted.models_on(home) == ["churn.acme"]
    assert table2["churn.acme"]["in_flight"] is None          # the tick reached it: timed out
