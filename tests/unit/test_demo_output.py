"""What the demo prints, without running it: the versions table stays readable when piped, and a
live event line is its description, with only the verdict coloured."""

from __future__ import annotations

import io

from rich.text import Text

from devstack import demo
from devstack.observe import Observer
from streams import events as ev
from streams.codec import build, decode
from streams.describe import describe
from streams.topics import Topics

W = "loopline/worker"
REJECTED = ["accuracy 0.652 < 0.7",      # both checks failed: the longest "why" the gate writes
            "does not improve enough on v1: accuracy 0.652 vs 0.916 is -0.264, needs >= 0.01"]


def chain(index: int, version: str, passed: bool, reasons: list[str]) -> list:
    """data -> request -> succeeded -> evaluated (-> promoted -> deployed when it passed)."""
    data = build(ev.DataArrived(uri=f"file:///b{index}", rows=1000, version=f"batch-0000{index}"),
                 demo.MODEL, source="loopline/demo")
    request = build(ev.TrainingRequested(idempotency_key=f"k{index}", reason="followup:data",
                                         data_versions=[f"batch-0000{index - 1}", f"batch-0000{index}"]),
                    demo.MODEL, source=W, cause=data)
    succeeded = build(ev.TrainingSucceeded(idempotency_key=f"k{index}", run_name=f"r{index}"),
                      demo.MODEL, source=W, cause=request)
    evaluated = build(ev.ModelEvaluated(version=version, run_name=f"r{index}", metric="accuracy",
                                        candidate_metrics={"accuracy": 0.922}, champion_version="1",
                                        champion_metrics={"accuracy": 0.916}, passed=passed,
                                        reasons=reasons), demo.MODEL, source=W, cause=succeeded)
    events = [data, request, succeeded, evaluated]
    if passed:
        promoted = build(ev.ModelPromoted(version=version), demo.MODEL, source=W, cause=succeeded)
        events += [promoted, build(ev.DeploymentDone(version=version, reason="promotion"),
                                   demo.MODEL, source=W, cause=promoted)]
    return events


def observed(*events) -> Observer:
    observer = Observer("unused:9092", Topics())          # never started: fed by hand
    observer.events = [decode(e.to_json()) for e in events]
    return observer


def test_piped_the_versions_table_keeps_each_version_on_one_line(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    observer = observed(*chain(8, "1", True, ["accuracy 0.91 >= 0.7", "no champion yet"]),
                        *chain(9, "2", False, REJECTED))
    out = io.StringIO()
    demo.make_console(file=out).print(demo.versions_table(observer))
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│ v")]
    assert len(rows) == 2, out.getvalue()
    assert "; ".join(REJECTED) in rows[1] and "batch-00008, batch-00009 (followup:data)" in rows[1]


def test_piped_with_columns_set_the_console_takes_that_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert demo.make_console(file=io.StringIO()).width == 123


def test_an_event_line_is_its_description_with_the_verdict_coloured():
    rejected = ev.ModelEvaluated(version="2", run_name="r", metric="accuracy", passed=False,
                                 reasons=["[bold]not[/] rejected by markup"])
    line = Text.from_markup(demo.event_line(rejected))
    assert line.plain == describe(rejected)
    assert [(line.plain[s.start:s.end], str(s.style)) for s in line.spans] == [("rejected", "red")]
