"""The Grafana dashboard (helm/loopline/dashboards/loopline.json): a dashboard Grafana loads,
every panel's queries parse as PromQL and name only metrics and labels that exist, it covers the
worker and serving, and the chart ships it where Grafana's sidecar finds it."""

from __future__ import annotations

import json
import re

import pytest

from tests.k8s.promql_check import defined_metrics, parse, problems, result_labels, selectors
from tests.k8s.schemas_check import validate_k8s
from tests.k8s.test_helm import CHART, FULL, by_kind, manifests

METRICS = defined_metrics()
DASHBOARD_FILE = CHART / "dashboards" / "loopline.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
GRID_WIDTH = 24


def test_it_is_a_grafana_dashboard():
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert DASHBOARD["title"] and DASHBOARD["uid"] and "id" not in DASHBOARD   # importable anywhere
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH and pos["h"] > 0, panel["title"]
    for panel in PANELS:
        assert panel["type"] in ("timeseries", "stat") and panel["title"] and panel["description"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panels_do_not_overlap():
    cells = set()
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_query_parses_and_names_existing_metrics_and_labels(panel):
    for target in panel["targets"]:
        assert problems(target["expr"], METRICS) == [], (panel["title"], target["expr"])
        carried = result_labels(parse(target["expr"]), METRICS)
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend <= carried, (panel["title"], legend - carried)


def test_the_model_variable_reads_a_metric_that_exists():
    (model,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "model"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", model["definition"]).groups()
    assert label in METRICS[metric]


def test_the_worker_and_serving_metrics_are_all_on_it():
    used = {s.name for p in PANELS for t in p["targets"] for s in selectors(parse(t["expr"]))}
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    for wanted in ("loopline_events_consumed", "loopline_decisions", "loopline_trainings_in_flight",
                   "loopline_job_duration_seconds", "loopline_consumer_lag", "loopline_dead_letters",
                   "loopline_data_to_deployment_seconds", "loopline_serving_requests",
                   "loopline_serving_request_seconds", "loopline_serving_batch_rows", "loopline_serving_errors",
                   "loopline_serving_feedback"):
        assert wanted in families, wanted
    latency = next(p for p in PANELS if "loopline_serving_request_seconds_bucket" in p["targets"][0]["expr"])
    assert {"model", "version", "arm"} <= result_labels(parse(latency["targets"][0]["expr"]), METRICS)


def test_the_chart_ships_it_as_a_configmap_for_grafanas_sidecar():
    assert not [d for d in by_kind(manifests({}), "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    (shipped,) = [d for d in by_kind(manifests(FULL), "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    validate_k8s(shipped)
    assert shipped["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert shipped["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(shipped["data"]["loopline.json"]) == DASHBOARD      # the file, byte-faithful JSON
    (default,) = [d for d in by_kind(manifests({"dashboards": {"enabled": True}}), "ConfigMap")
                  if d["metadata"]["name"].endswith("-dashboard")]
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
