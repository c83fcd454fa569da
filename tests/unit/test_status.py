"""`loopline status`: what it picks from the events, and that the table renders."""

from __future__ import annotations

import io

from rich.console import Console

from loopline.commands import status
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
