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


def test_the_status_table_shows_what_an_operator_asks_first():
    out = io.StringIO()
    status.show(REPORT, Console(file=out, width=220, color_system=None))
    text = out.getvalue()
    for needle in ("v3 accuracy=0.91 gate passed data b3", "v2 accuracy=0.88", "v1 (not in the registry)",
                   "paused", "yes", "suppressed triggers", "4", "clf-abc", "runs:/r4", "req-9",
                   "data.arrived", "500 rows", "0:7: bad signature", "p.data.arrived", "consumer lag"):
        assert needle in text, needle


def test_an_event_line_shows_its_brackets_as_written():
    pause = build(ev.OperatorCommand(command="pause", reason="[urgent] disk full [/]", operator="alice"),
                  "clf", source="t")
    model = {**REPORT["models"]["clf"], "last_events": status.last_events(seen(pause))}
    out = io.StringIO()
    status.show({**REPORT, "models": {"clf": model}}, Console(file=out, width=220, color_system=None))
    assert "pause by alice: [urgent] disk full [/]" in out.getvalue()
