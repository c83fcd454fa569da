"""The page's API on injected events (no broker, no browser), and what the page's process loads.

The in-process app is the one `loopline ui` serves; its store is filled with a chain of real
events (built as the agents build them), so causes, effects and the "why not" are computed by
the same code as on a live stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from streams import events as ev
from streams.codec import build
from ui.server import Background, make_app
from ui.store import EventStore, item_of_event

SOURCE = "tests/api"


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def chain():
    data = build(ev.DataArrived(uri="file:///d/1", rows=500, version="b1"), "m", source=SOURCE)
    request = build(ev.TrainingRequested(idempotency_key="k", reason="new_data", causes=[data.key]), "m",
                    source=SOURCE, cause=data)
    done = build(ev.DeploymentDone(version="1", reason="promotion"), "m", source=SOURCE, cause=request)
    small = build(ev.DataArrived(uri="file:///d/2", rows=3, version="b2"), "m", source=SOURCE)
    skipped = build(ev.DecisionRecorded(policy="retrain", outcome="skipped", reason="3/500 new rows",
                                        signal_id=small.id, signal_type=small.type), "m", source=SOURCE, cause=small)
    clock = build(ev.ClockTicked(), "m", source=SOURCE)                 # no lane: never shown
    return {"data": data, "request": request, "done": done, "small": small, "skipped": skipped, "clock": clock}


@pytest.fixture(scope="module")
def url(chain):
    store = EventStore()
    store.extend(i for i in map(item_of_event, chain.values()) if i is not None)
    store.ready = True
    with Background(make_app(store, aliases={"m": "champion"})) as base:
        yield base


def test_events_are_in_their_lanes_and_filtered(url, chain):
    rows = get(f"{url}/api/events")
    assert [(r["lane"], r["id"]) for r in rows] == [
        ("data", chain["data"].id), ("training", chain["request"].id), ("deployment", chain["done"].id),
        ("data", chain["small"].id), ("decision", chain["skipped"].id)]
    assert [r["id"] for r in get(f"{url}/api/events?type=decision")] == [chain["skipped"].id]
    assert len(get(f"{url}/api/events?type=data.arrived&limit=1")) == 1
    assert get(f"{url}/api/events?model=other") == []


def test_an_event_knows_its_causes_effects_and_why_not(url, chain):
    request = get(f"{url}/api/events/{chain['request'].id}")
    assert [c["id"] for c in request["causes"]] == [chain["data"].id]
    assert [e["id"] for e in request["effects"]] == [chain["done"].id]
    data = get(f"{url}/api/events/{chain['data'].id}")
    assert data["started_training"] and [e["id"] for e in data["effects"]] == [chain["request"].id, chain["done"].id]
    small = get(f"{url}/api/events/{chain['small'].id}")
    assert small["signal"] and not small["started_training"] and small["effects"] == []
    assert [(d["outcome"], d["reason"]) for d in small["decisions"]] == [("skipped", "3/500 new rows")]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/api/events/nope", timeout=10)
    assert missing.value.code == 404


def test_models_and_champions(url, chain):
    [model] = get(f"{url}/api/models")
    assert (model["name"], model["champion"], model["alias"], model["versions"]) == ("m", "1", "champion", ["1"])
    [move] = get(f"{url}/api/champions/m")
    assert (move["version"], move["event_id"], move["to"]) == ("1", chain["done"].id, None)


def test_the_shell_escapes_names_and_sends_a_strict_policy(url):
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert '<script src="/static/app.js" defer></script>' in page and "http" not in page.split("<body")[0]


def test_the_pages_process_loads_no_faust_worker_launcher_or_serving():
    """What import-linter cannot see through the composition root's lazy imports: the page's
    modules and everything `loopline ui` imports leave Faust, aiokafka, the worker's agents, the
    launchers' Kubernetes client and serving unloaded (loopline.config reads the pipeline's
    plain config classes from triggers.pipeline: data, not a launcher)."""
    code = ("import sys, loopline.cli, ui.server, ui.bus, ui.views, loopline.config, loopline.commands.status, "
            "loopline.commands.lineage, loopline.commands.snapshot; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('faust', 'aiokafka', 'serving', 'kubernetes') or m in "
            "('agents.trigger', 'agents.app', 'agents.context', 'agents.transport', 'triggers.local', 'triggers.kube')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
