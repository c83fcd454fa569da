"""`loopline status`: what it picks from the events, and that the table renders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from loopline.commands import status
from loopline.commands.catalog_view import CatalogView, parse_catalog
from loopline.commands.snapshot import Record, Seen
from streams import events as ev
from streams.codec import build, decode


def seen(*events) -> list[Seen]:
    return [Seen(Record("t", 0, i, 0.0, b"clf", e.to_json()), decode(e.to_json())) for i, e in enumerate(events)]


def test_last_events_keeps_the_newest_of_each_kind_and_leaves_ticks_out():
    first = build(ev.DataArrived(uri="file:///a", rows=1, version="a"), "clf", source="t")
    second = build(ev.DataArrived(uri="file:///b", rows=2, version="b"), "clf", source="t")
    tick = build(ev.ClockTicked(), "clf", source="t")
    pause = build(ev.OperatorCommand(command="pause", reason="incident", operator="alice"), "clf", source="t")
    last = status.last_events(seen(first, tick, second, pause))
    assert set(last) == {ev.DataArrived.TYPE, ev.OperatorCommand.TYPE}
    assert last[ev.DataArrived.TYPE]["id"] == second.id
    assert last[ev.OperatorCommand.TYPE]["summary"] == "pause by alice: incident"


REPORT = {
    "generated_at": "2030-01-01T00:00:00Z", "group": "g", "topic_prefix": "p",
    "models": {"clf": {
        "alias": "champion",
        "champion": {"version": "3", "run_id": "r3", "gate": "passed", "data_versions": ["b3"],
                     "metrics": {"accuracy": 0.91}},
        "previous": [{"version": "2", "run_id": "r2", "gate": "passed", "data_versions": ["b2"],
                      "metrics": {"accuracy": 0.88}}, {"version": "1", "missing": True}],
        "paused": True, "suppressed_triggers": 4, "pending": ["data"], "new_rows": 2000,
        "last_request_at": None,
        "in_flight": {"idempotency_key": "k", "request_id": "req-9", "reason": "manual",
                      "run_name": "clf-abc", "runs": [{"run_id": "r4", "step": "train",
                                                       "status": "RUNNING", "link": "runs:/r4"}]},
        "last_events": {ev.DataArrived.TYPE: {"id": "e1", "time": "2030", "summary": "500 rows"}},
        "dead_letters": {"count": 1, "last": {"id": "0:7", "reason": "bad signature", "time": "2030"}},
    }},
    "lag": {"p.data.arrived": {"lag": 2, "end": 10, "committed": 8, "consumed": True},
            "p.drift.detected": {"lag": None, "end": 0, "committed": 0, "consumed": False}},
}


def model_rows(text: str) -> dict[str, str]:
    """The model table's two-column rows as {label: value}: `│ paused │ yes │` -> {"paused": "yes"}."""
    cells = (line.strip("│ ").split("│") for line in text.splitlines() if line.startswith("│"))
    return {row[0].strip(): row[1].strip() for row in cells if len(row) == 2}


def test_the_status_table_shows_what_an_operator_asks_first():
    out = io.StringIO()
    status.show(REPORT, Console(file=out, width=220, color_system=None))
    text = out.getvalue()
    rows = model_rows(text)
    assert rows["paused"] == "yes"
    assert rows["suppressed triggers"] == "4"
    assert rows["champion"] == "v3 accuracy=0.91 gate passed data b3"
    for needle in ("v2 accuracy=0.88", "v1 (not in the registry)", "clf-abc", "runs:/r4", "req-9",
                   "data.arrived", "500 rows", "0:7: bad signature", "p.data.arrived", "consumer lag"):
        assert needle in text, needle


def test_a_running_model_says_it_is_not_paused():
    running = {**REPORT["models"]["clf"], "paused": False, "suppressed_triggers": 0}
    out = io.StringIO()
    status.show({**REPORT, "models": {"clf": running}}, Console(file=out, width=220, color_system=None))
    rows = model_rows(out.getvalue())
    assert (rows["paused"], rows["suppressed triggers"]) == ("no", "0")


def test_an_event_line_shows_its_brackets_as_written():
    pause = build(ev.OperatorCommand(command="pause", reason="[urgent] disk full [/]", operator="alice"),
                  "clf", source="t")
    model = {**REPORT["models"]["clf"], "last_events": status.last_events(seen(pause))}
    out = io.StringIO()
    status.show({**REPORT, "models": {"clf": model}}, Console(file=out, width=220, color_system=None))
    assert "pause by alice: [urgent] disk full [/]" in out.getvalue()


def rollout_events(*, end: str | None):
    started = build(ev.RolloutStarted(experiment="clf-v4-ab12", strategy="canary", champion_version="3",
                                      challenger_versions=["4"]), "clf", source="t")
    step = build(ev.RolloutAnalysed(experiment="clf-v4-ab12", step=0, verdict="progressing", action="step",
                                    weight=1.0, test="Bayesian", numbers={"p_better": 0.97},
                                    reason="P(v4 better) 0.97"), "clf", source="t")
    last = {"pause": ev.RolloutAnalysed(experiment="clf-v4-ab12", step=1, verdict="inconclusive",
                                        action="pause", test="Bayesian", reason="too little feedback"),
            "deployed": ev.DeploymentDone(version="4", previous_version="3", reason="manual promote")}
    return seen(started, step, *([build(last[end], "clf", source="t")] if end else []))


def test_a_live_rollout_is_shown_with_its_last_analysis_and_an_ended_one_is_not():
    running = status.live_rollout(rollout_events(end=None))
    assert (running["state"], running["challengers"], running["last_analysis"]["action"]) == (
        "running", ["4"], "step")
    assert status.live_rollout(rollout_events(end="pause"))["state"] == "paused"
    assert status.live_rollout(rollout_events(end="deployed"))["state"] == "ended"
    assert status.live_rollout(seen()) is None
    out = io.StringIO()
    model = {**REPORT["models"]["clf"], "rollout": status.live_rollout(rollout_events(end="pause"))}
    status.show({**REPORT, "models": {"clf": model}}, Console(file=out, width=220, color_system=None))
    assert "canary clf-v4-ab12 (paused): v4 vs v3; inconclusive → pause: too little feedback" in out.getvalue()


# --- at scale: the summary, --all, families, the light read of loopline.yaml ------------------------

def model(**changes) -> dict:
    """A model of a report as `collect` builds it: quiet (nothing to look at) unless changed."""
    quiet = {"alias": "champion", "champion": None, "previous": [], "paused": False, "suppressed_triggers": 0,
             "suppressed_events": [], "pending": [], "new_rows": 1, "last_request_at": None, "in_flight": None,
             "last_events": {}, "last_training": None, "rollout": None, "family": None,
             "dead_letters": {"count": 0, "last": None}}
    return {**quiet, **changes}


def big_report() -> dict:
    """260 models: 200 members of family churn, 60 plain; a few in each state."""
    models = {f"churn.c{i:03d}": model(family="churn") for i in range(200)}
    models.update({f"plain{i:02d}": model() for i in range(60)})
    champion = REPORT["models"]["clf"]["champion"]
    for name in ("churn.c000", "churn.c001", "plain00"):
        models[name]["paused"] = True
    for name in ("churn.c002", "plain01"):
        models[name]["last_training"] = "failed"
    models["churn.c003"]["dead_letters"] = {"count": 3, "last": {"id": "1:2", "reason": "bad", "time": "2030"}}
    for name in ("churn.c004", "churn.c005"):
        models[name]["in_flight"] = {"idempotency_key": "k", "request_id": "r", "reason": "data", "run_name": "x",
                                     "runs": []}
    for i in range(10, 20):
        models[f"churn.c{i:03d}"]["champion"] = champion
    models["plain02"]["champion"] = champion
    return {**REPORT, "models": models}


def test_the_summary_counts_each_state_and_each_family():
    s = status.summarize(big_report())
    assert s["models"] == 260
    assert s["totals"] == {"in_flight": 2, "paused": 3, "failed": 2, "dead_letters": 1, "rollout": 0,
                           "no_champion": 260 - 11, "suppressing": 0}
    assert s["dead_letters"] == 3
    assert list(s["families"]) == ["churn", status.NO_FAMILY]          # the family-less last
    churn, plain = s["families"]["churn"], s["families"][status.NO_FAMILY]
    assert (churn["models"], churn["paused"], churn["failed"], churn["dead_letters"], churn["in_flight"],
            churn["no_champion"]) == (200, 2, 1, 1, 2, 190)
    assert (plain["models"], plain["paused"], plain["failed"], plain["no_champion"]) == (60, 1, 1, 59)
    # in flight and without a champion are normal life: counted, not listed
    assert [name for name, _ in s["attention"]] == ["churn.c000", "churn.c001", "churn.c002", "churn.c003",
                                                    "plain00", "plain01"]


def summary_text(report: dict) -> str:
    out = io.StringIO()
    status.show_summary(report, Console(file=out, width=240, color_system=None))
    return out.getvalue()


def test_the_summary_lists_only_the_models_that_need_attention_and_says_how_to_see_all():
    text = summary_text(big_report())
    assert "260 models" in text and "status --all" in text and "--family F" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines()
            if line.startswith("│") and line.count("│") == 6}
    assert set(rows) == {"churn.c000", "churn.c001", "churn.c002", "churn.c003", "plain00", "plain01"}
    assert "failed last run" in rows["churn.c002"] and "3 dead letters" in rows["churn.c003"]
    assert "churn.c010" not in text and "plain02" not in text                # quiet models: not a row
    assert "consumer lag" in text and "p.data.arrived" in text


def test_a_long_attention_list_is_cut_and_says_how_many_more():
    report = big_report()
    for name in list(report["models"])[:status.ATTENTION_ROWS + 7]:
        report["models"][name]["paused"] = True
    text = summary_text(report)
    # churn.c000-c056 paused (c002 failed and c003 dead-lettered among them), plain00 and plain01: 59
    assert "needs attention (59:" in text and "and 9 more" in text


@pytest.mark.parametrize("argv, shown", [
    ([], "summary"), (["--all"], "tables"), (["--model", "plain00"], "tables"), (["--json"], "json"),
    (["--family", "churn"], "summary")])
def test_past_the_threshold_the_default_is_the_summary(monkeypatch, capsys, argv, shown):
    import argparse

    report = big_report()
    if "--model" in argv:
        report = {**report, "models": {"plain00": report["models"]["plain00"]}}
    seen: dict = {}
    monkeypatch.setattr(status, "collect", lambda settings, only, family=None, brief=False: seen.update(
        only=only, family=family, brief=brief) or report)
    monkeypatch.setattr(status, "show", lambda r: print("TABLES", len(r["models"])))
    monkeypatch.setattr(status, "show_summary", lambda r: print("SUMMARY", len(r["models"])))
    parser = argparse.ArgumentParser()
    status.add_parser(parser.add_subparsers())
    args = parser.parse_args(["status", *argv])
    assert status.run(args, settings=None) == 0
    out = capsys.readouterr().out
    if shown == "json":
        assert len(json.loads(out)["models"]) == 260                    # JSON: every model
    else:
        assert out.startswith({"summary": "SUMMARY", "tables": "TABLES"}[shown])
    assert (seen["only"], seen["family"]) == (
        "plain00" if "--model" in argv else None, "churn" if "--family" in argv else None)
    assert seen["brief"] == (shown == "summary")       # the summary decodes only what it shows


def test_a_few_models_keep_their_tables():
    report = big_report()
    small = {**report, "models": dict(list(report["models"].items())[:status.SUMMARY_THRESHOLD])}
    assert len(small["models"]) == status.SUMMARY_THRESHOLD


def test_a_model_belongs_to_a_family_only_when_loopline_yaml_has_that_family():
    families = {"churn": "champion"}
    assert status.family_of("churn.acme", families) == "churn"
    assert status.family_of("fraud.v2", families) is None               # a plain model with a dot
    assert status.family_of("plain", families) is None
    view = CatalogView({"clf": "live", "churn.acme": "prod"}, {"churn": "prod"})
    assert [status.alias_of(n, view) for n in ("clf", "churn.acme", "churn.newcomer", "other")] == [
        "live", "prod", "prod", "champion"]


YAML = """
models:
  - name: clf
    pipeline: {launcher: local, steps: [{name: train, command: ["true"]}]}
    gate: {from_step: train}
    deploy: {alias: live}
  - name: fraud.v2
    pipeline:
      steps:
        - name: train
          command: [python, -c, "print('a: b')"]
    gate: {from_step: train}
families:
  - name: churn
    members: [acme, globex]
    pipeline: {steps: [{name: train, command: ["true"]}]}
    gate: {from_step: train}
    deploy: {alias: prod}
"""


def test_the_light_read_of_loopline_yaml_agrees_with_config_load():
    import yaml

    from loopline import config

    light = parse_catalog(YAML)
    full = config.parse(yaml.safe_load(YAML), Path("loopline.yaml"))
    assert light.models == {name: m.alias for name, m in full.items()}
    assert light.models == {"clf": "live", "fraud.v2": "champion", "churn.acme": "prod", "churn.globex": "prod"}
    assert light.families == {"churn": "prod"}


def test_an_alias_where_a_kept_value_lies_is_resolved_by_the_full_loader():
    text = YAML.replace("deploy: {alias: live}", "deploy: &dep {alias: live}").replace(
        "deploy: {alias: prod}", "deploy: *dep")
    assert parse_catalog(text).families == {"churn": "live"}
    merged = YAML.replace("    deploy: {alias: live}", "    <<: {deploy: {alias: merged}}")
    assert parse_catalog(merged).models["clf"] == "merged"


def test_a_broken_loopline_yaml_is_a_config_error():
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_catalog("models: [\n")


def lazy(*events_or_bytes):
    from loopline.commands.lazy_events import lazy_all

    return lazy_all(Record("t", 0, i, 0.0, b"clf", e if isinstance(e, bytes) else e.to_json())
                    for i, e in enumerate(events_or_bytes))


def test_events_read_lazily_decode_only_the_newest_of_each_kind_and_pass_over_a_broken_one():
    first = build(ev.DataArrived(uri="file:///a", rows=1, version="a"), "clf", source="t")
    second = build(ev.DataArrived(uri="file:///b", rows=2, version="b"), "clf", source="t")
    broken = json.loads(second.to_json())
    broken.update(id="broken", data={"rows": "many"})              # an envelope, data that does not validate
    events = lazy(first, second, json.dumps(broken).encode(), b"not json")
    assert [s.id for s in events] == [first.id, second.id, "broken"]       # no envelope: not an event
    last = status.last_events(events)
    assert last[ev.DataArrived.TYPE]["id"] == second.id
    from loopline.commands.lazy_events import _UNSET

    assert [("unread" if s._decoded is _UNSET else "decoded" if s._decoded else "refused") for s in events] == [
        "unread", "decoded", "refused"]                       # the older one's data was never decoded


def test_a_brief_status_leaves_the_last_events_of_a_quiet_model_unread():
    from agents.policies import ModelState
    from agents.ports import Champion

    arrived = build(ev.DataArrived(uri="file:///a", rows=1, version="a"), "clf", source="t")
    failed = build(ev.TrainingFailed(idempotency_key="k", run_name="r", reason="boom"), "clf", source="t")
    found = {"champions": {"clf": Champion(None)}, "versions": {}, "runs": {}, "flights": {}}
    quiet = status.model_status("clf", "champion", lazy(arrived), ModelState(), [], found, "", brief=True)
    assert quiet["last_events"] is None and quiet["last_training"] is None
    loud = status.model_status("clf", "champion", lazy(arrived, failed), ModelState(), [], found, "", brief=True)
    assert loud["last_training"] == "failed" and set(loud["last_events"]) == {ev.DataArrived.TYPE,
                                                                               ev.TrainingFailed.TYPE}
    full = status.model_status("clf", "champion", lazy(arrived), ModelState(), [], found, "")
    assert set(full["last_events"]) == {ev.DataArrived.TYPE}


def test_status_names_the_trigger_s_changelog_as_the_worker_does():
    from agents.trigger import state_changelog
    from loopline.commands.snapshot import state_changelog as light

    assert light("p-worker") == state_changelog("p-worker")
