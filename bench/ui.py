"""Benchmark: the page with 10,000 events — navigation to the timeline drawn, in headless Chromium.

    python -m bench.ui [--quick] [--events 10000] [--repeats 5]

No broker: the same aiohttp app `loopline ui` serves (ui.server.make_app) runs in this process,
its store filled with `events` synthetic events of every lane (5 models, each round a data
event, a decision, a training's request/start/success, an evaluation, a promotion, a deployment,
with drift, metric, operator and rollout events between), and Debian's chromium (through
Playwright, `executable_path=/usr/bin/chromium`) loads the page `repeats` times, each in a new
page. Measured per load: the page's own mark `timeline-drawn` (set when every lane's path is
drawn), in ms from the start of navigation: the HTML, the script, the JSON of every event, and
the drawing. Reported: the median of the loads, beside the goal (<= 1 s), and how much of it
was the /api/events response and how much the drawing.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from bench import common

GOAL_MS = 1000.0
CHROMIUM = "/usr/bin/chromium"


def synthetic_events(n: int, models: int = 5, span_seconds: float = 6 * 3600.0, start: float | None = None):
    """`n` events in every lane, in causal chains, spread over `span_seconds` up to `start`."""
    from streams import events as ev
    from streams.codec import build

    start = start if start is not None else time.time() - span_seconds
    names = [f"model-{k}" for k in range(models)]
    out: list = []
    version = {name: 0 for name in names}

    def at(event, k: int):
        stamp = start + span_seconds * k / max(n, 1)
        return replace(event, time=datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z"))

    source = "bench/ui"
    while len(out) < n:
        for name in names:
            k = len(out)
            data = build(ev.DataArrived(uri=f"file:///d/{name}/{k}", rows=500, version=f"b{k}"), name, source=source)
            decision = build(ev.DecisionRecorded(policy="retrain", outcome="requested", reason="500 new rows >= 500",
                                                 signal_id=data.id, signal_type=data.type), name,
                             source=source, cause=data)
            request = build(ev.TrainingRequested(idempotency_key=f"k{k}", reason="new_data", causes=[data.key],
                                                 data_versions=[f"b{k}"], rows=500), name, source=source, cause=data)
            version[name] += 1
            v = str(version[name])
            chain = [data, decision, request]
            for data_ in (ev.TrainingStarted(idempotency_key=f"k{k}", run_name=f"r{k}", launcher="local"),
                          ev.TrainingSucceeded(idempotency_key=f"k{k}", run_name=f"r{k}",
                                               outputs={"train": {"model_version": v}}, duration_seconds=3.0),
                          ev.ModelEvaluated(version=v, run_name=f"r{k}", metric="accuracy",
                                            candidate_metrics={"accuracy": 0.9}, passed=True),
                          ev.ModelPromoted(version=v, champion_version=str(int(v) - 1) if int(v) > 1 else None),
                          ev.DeploymentDone(version=v, previous_version=str(int(v) - 1) if int(v) > 1 else None)):
                chain.append(build(data_, name, source=source, cause=chain[-1]))
            chain += [
                build(ev.DriftDetected(dataset_version=f"b{k}", reference_version="b0", drift_share=0.1), name,
                      source=source),
                build(ev.MetricReported(metric="accuracy", value=0.91, count=200, model_version=v), name,
                      source=source),
                build(ev.OperatorCommand(command="pause", reason="looking", operator="bench"), name, source=source),
                build(ev.RolloutStarted(experiment=f"e{k}", strategy="canary", champion_version="1",
                                        challenger_versions=[v]), name, source=source),
            ]
            for event in chain:
                if len(out) >= n:
                    break
                out.append(at(event, len(out)))
    return out


def run(events: int = 10_000, repeats: int = 5) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from ui.server import Background, make_app
    from ui.store import EventStore, item_of_event

    store = EventStore()
    store.extend(item for item in map(item_of_event, synthetic_events(events)) if item is not None)
    store.ready = True
    loads = []
    with Background(make_app(store, title="loopline · bench")) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            version = browser.version
            for _ in range(repeats + 1):                 # the first load warms the browser: not counted
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(url + "/", wait_until="commit")
                page.wait_for_selector("html[data-drawn]", state="attached", timeout=30_000)
                loads.append(page.evaluate("""() => {
                    const drawn = performance.getEntriesByName("timeline-drawn")[0].startTime;
                    const api = performance.getEntriesByType("resource").find((r) => r.name.includes("/api/events"));
                    const marks = [...document.querySelectorAll("path.marks")]
                      .reduce((sum, p) => sum + Number(p.dataset.count), 0);
                    return {drawn_ms: drawn, api_end_ms: api ? api.responseEnd : null, marks,
                            dom_nodes: document.getElementsByTagName("*").length};
                }"""))
                loads[-1]["console_errors"] = errors
                page.close()
        finally:
            browser.close()
    counted = loads[1:]
    drawn = [x["drawn_ms"] for x in counted]
    median = statistics.median(drawn)
    return {"benchmark": "ui", "machine": common.machine(), "events": len(store.items), "repeats": repeats,
            "chromium": version, "loads_ms": [round(x, 1) for x in drawn],
            "median_ms": round(median, 1), "max_ms": round(max(drawn), 1),
            "api_response_end_median_ms": round(statistics.median(x["api_end_ms"] or 0 for x in counted), 1),
            "draw_after_response_median_ms": round(statistics.median(
                x["drawn_ms"] - (x["api_end_ms"] or 0) for x in counted), 1),
            "marks": counted[-1]["marks"], "dom_nodes": counted[-1]["dom_nodes"],
            "console_errors": sorted({e for x in counted for e in x["console_errors"]}),
            "goal_ms": GOAL_MS, "holds": median <= GOAL_MS}


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"the page with {result['events']:,} events, headless Chromium {result['chromium']} "
                        f"(median of {result['repeats']} loads)")
    for column in ("measure", "goal", "measured", "holds"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row("navigation → timeline drawn", f"<= {result['goal_ms']:.0f} ms", f"{result['median_ms']:.0f} ms",
                  "[green]✓[/]" if result["holds"] else "[red]✗[/]")
    table.add_row("  of which: /api/events answered", "", f"{result['api_response_end_median_ms']:.0f} ms", "")
    table.add_row("  of which: parse + draw after it", "", f"{result['draw_after_response_median_ms']:.0f} ms", "")
    table.add_row("marks drawn / DOM elements", "", f"{result['marks']:,} / {result['dom_nodes']:,}", "")
    table.add_row("each load (ms)", "", ", ".join(f"{x:.0f}" for x in result["loads_ms"]), "")
    Console().print(table)


BENCH = common.Bench("ui", run, show, full={"events": 10_000, "repeats": 5}, quick={"events": 500, "repeats": 2},
                     doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
