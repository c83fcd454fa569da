"""The page in headless Chromium, after a real loop: lanes, live events, why not, lineage.

One module-scoped stack (real broker, worker, MLflow store; serving off) trains a constant model
(`bench.steps.trivial_train`: seconds): two data batches of 60 rows reach the model's 100-row
threshold together, so v1 is trained on both, evaluated, promoted and deployed; then a batch of
5 rows stays below it (the policy skips it: a "why not"). `loopline ui` runs against that
stack as its own process, and the browser looks. Marks are counted from the SVG (each lane is
one path; its `data-count` and its subpaths), never compared as pixels; the screenshots in
docs/screenshots/ are taken here, beside those counts.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from devstack.stack import REPO, LocalStack, Process, ready
from streams import events as ev
from streams.broker import free_port
from streams.codec import build
from streams.publisher import Publisher
from tests.browser.conftest import http_json
from tests.waiting import wait_until
from ui.store import LANES, lane_of

pytestmark = pytest.mark.slow

MODEL = "page"
STEP = [sys.executable, "-m", "bench.steps.trivial_train"]
DECISION_WAIT = 20.0           # a skip's decision must be on the topic within this


def model_config() -> dict:
    return {"name": MODEL, "pipeline": {"launcher": "local", "workdir": str(REPO),
                                       "steps": [{"name": "train", "command": STEP}]},
            "retrain": {"min_new_rows": 100, "window_batches": 4, "cooldown_seconds": 0},
            "gate": {"metric": "accuracy", "min_improvement": 0.0, "from_step": "train"}}


def data(batch: str, rows: int) -> ev.DataArrived:
    return ev.DataArrived(uri=f"file:///t/{MODEL}/{batch}", rows=rows, version=batch)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bootstrap):
    root = tmp_path_factory.mktemp("page")
    config = root / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [model_config()]}))
    with LocalStack(root / "state", config, bootstrap=bootstrap, prefix=LocalStack.unique_prefix(),
                    partitions=2) as s:
        # The page starts with the loop, so the whole run reaches it live (and its start-up
        # overlaps the training instead of following it).
        port = free_port()
        page = Process("ui", [sys.executable, "-m", "loopline.cli", "ui", "--port", str(port)], s.env(),
                       s.state_dir / "ui.log")
        s.url = f"http://127.0.0.1:{port}"
        try:
            with Publisher(s.bootstrap, s.settings.topics) as bus:
                s.bus = bus
                for batch in ("b1", "b2"):
                    bus.publish(build(data(batch, 60), MODEL, source="tests/page"))
                wait_until(lambda: of_type(s, ev.DeploymentDone), 120, "v1 deployed")
                s.skipped = build(data("b3", 5), MODEL, source="tests/page")     # below the threshold
                bus.publish(s.skipped)

                def up() -> bool:
                    page.check()
                    return ready(port)

                wait_until(up, 60, "loopline ui ready")
                yield s
        finally:
            page.stop()


@pytest.fixture(scope="module")
def url(stack):
    return stack.url


def of_type(stack, data_type: type[ev.EventData]) -> list:
    """Distinct events of one type for the model (the observer may see a copy twice)."""
    found = {d.event.id: d for d in stack.observer.of_type(data_type.TYPE) if d.event.subject == MODEL}
    return list(found.values())


def observed_lanes(stack) -> dict[str, int]:
    ids: dict[str, set] = {lane: set() for lane in LANES}
    for event_type in {lane_type for lane_type in ev.EVENT_TYPES if lane_of(lane_type)}:
        for d in stack.observer.of_type(event_type):
            if d.event.subject == MODEL:
                ids[lane_of(event_type)].add(d.event.id)
    return {lane: len(found) for lane, found in ids.items()}


def open_timeline(page, url: str):
    page.goto(f"{url}/#timeline")
    page.wait_for_selector("html[data-drawn]", state="attached", timeout=15_000)
    return page


def lane_path(page, lane: str):
    return page.locator(f'#timeline-svg path.marks[data-lane="{lane}"]')


def marks(page, lane: str) -> int:
    """A lane's marks, counted from the path itself: one `M` subpath per event."""
    d = lane_path(page, lane).get_attribute("d")
    count = int(lane_path(page, lane).get_attribute("data-count"))
    assert d.count("M") == max(count, 1)          # an empty lane is the placeholder "M0 0"
    return count


def click_event(page, event_id: str, ts: float, lane: str) -> None:
    """Click where the event's mark is: the page hit-tests the click (one listener, no DOM per mark)."""
    svg = page.locator("#timeline-svg")
    attrs = {k: float(svg.get_attribute(f"data-{k}")) for k in ("t0", "t1", "left", "right", "top",
                                                               "lane-height", "width")}
    box = svg.bounding_box()
    scale = box["width"] / attrs["width"]
    x = attrs["left"] + (ts - attrs["t0"]) / (attrs["t1"] - attrs["t0"]) * (attrs["right"] - attrs["left"])
    y = attrs["top"] + (LANES.index(lane) + 0.5) * attrs["lane-height"]
    page.mouse.click(box["x"] + x * scale, box["y"] + y * scale)
    page.wait_for_selector(f'#panel[data-event="{event_id}"]', timeout=5000)


def test_the_page_shows_the_loop_in_its_lanes(stack, url, page):
    open_timeline(page, url)
    assert page.title().startswith("loopline")
    expected = observed_lanes(stack)
    # The loop's own record: two data batches and the skipped one, one training (requested,
    # started, succeeded), one evaluation, one promotion, one deployment; nothing else ran.
    assert expected["data"] >= 3
    assert (expected["training"], expected["evaluation"], expected["promotion"], expected["deployment"]) == \
        (3, 1, 1, 1), expected
    for lane in LANES:
        # the page follows the bus: a decision recorded a moment ago may still be on its way
        wait_until(lambda: marks(page, lane) == observed_lanes(stack)[lane], 10,
                   f"{lane}: the page's marks equal the events on the topics")
    assert marks(page, "drift") == marks(page, "rollout") == 0
    # the API says the same as the SVG
    rows = http_json(f"{url}/api/events?model={MODEL}")
    assert {lane: sum(r["lane"] == lane for r in rows) for lane in LANES} == \
        {lane: marks(page, lane) for lane in LANES}
    page.screenshot_to("timeline.png")


def test_a_new_event_appears_live_without_reload(stack, url, page):
    open_timeline(page, url)
    page.wait_for_selector("#live.on", timeout=10_000)       # the event stream is connected
    before = marks(page, "data")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    stack.bus.publish(build(data(f"live{before}", 1), MODEL, source="tests/page"))
    page.wait_for_selector(f'#timeline-svg path.marks[data-lane="data"][data-count="{before + 1}"]',
                           state="attached", timeout=2000)
    assert navigations == []                                  # no reload


def test_clicking_an_event_shows_what_caused_it_and_what_it_caused(stack, url, page):
    open_timeline(page, url)
    request = of_type(stack, ev.TrainingRequested)[0]
    click_event(page, request.event.id, request.event.timestamp, "training")
    panel = page.locator("#panel")
    causes = panel.locator("ul.causes li")
    effects = panel.locator("ul.effects li")
    # caused by both data batches (the window); caused the run, evaluation, promotion, deployment
    assert causes.count() == 2 and causes.filter(has_text="data.arrived").count() == 2
    effect_types = set(effects.locator("button").all_inner_texts())
    assert {"training.started", "training.succeeded", "model.evaluated", "model.promoted",
            "deployment.done"} <= effect_types
    page.screenshot_to("event-panel.png")


def test_the_why_not_of_a_skipped_signal_shows_the_policys_reason(stack, url, page):
    def decision():
        return [d for d in stack.observer.of_type("io.loopline.decision.recorded")
                if d.event.data.get("signal_id") == stack.skipped.id]

    found = wait_until(decision, DECISION_WAIT, "the trigger's decision about the skipped data event")
    assert found[0].event.data["outcome"] == "skipped"
    reason = found[0].event.data["reason"]
    open_timeline(page, url)
    click_event(page, stack.skipped.id, stack.skipped.timestamp, "data")
    why_not = page.locator("#panel .why-not")
    why_not.wait_for(timeout=5000)
    assert page.locator("#panel ul.effects").count() == 0       # it started nothing
    assert reason in why_not.locator(".reason").all_inner_texts()
    page.screenshot_to("why-not.png")


def test_the_lineage_graph_of_the_promoted_version_has_every_node(stack, url, page):
    version = of_type(stack, ev.ModelPromoted)[0].data.version
    page.goto(f"{url}/#lineage/{MODEL}/{version}")
    page.wait_for_selector("#lineage[data-nodes]", state="attached", timeout=30_000)
    chain = http_json(f"{url}/api/lineage/{MODEL}/{version}")
    counts = {kind: page.locator(f'#lineage g.node[data-kind="{kind}"]').count()
              for kind in ("trigger", "request", "run", "data", "evaluation", "promotion", "rollout", "deployment")}
    assert counts == {"trigger": 2, "request": 1, "run": 1, "data": 2, "evaluation": 1, "promotion": 1,
                      "rollout": 0, "deployment": 1}, counts
    assert counts["trigger"] == len(chain["triggers"]) and counts["data"] == len(chain["data_versions"])
    assert sorted(chain["data_versions"]) == ["b1", "b2"]
    # every node but the first column's is reached by an arrow from the column before
    assert page.locator("#lineage path.edge").count() == 2 * 1 + 1 * 1 + 1 * 2 + 2 * 1 + 1 + 1
    assert chain["links"]["mlflow"] is None or chain["links"]["mlflow"].startswith("http")
    page.screenshot_to("lineage.png", locator=page.locator("#view-lineage"))


def test_champions_and_dead_letters_views(stack, url, page):
    page.goto(f"{url}/#champions/{MODEL}")
    page.wait_for_selector("table.champion-history tr[data-version]", timeout=15_000)
    assert page.locator(".champion-chart circle.move").count() == len(of_type(stack, ev.DeploymentDone)) == 1
    page.goto(f"{url}/#deadletters")
    page.wait_for_selector("#deadletters p, #deadletters table", timeout=15_000)


def test_the_page_is_read_only(url):
    import urllib.error
    import urllib.request

    for path in ("/", "/api/events", "/api/deadletters"):
        request = urllib.request.Request(url + path, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
