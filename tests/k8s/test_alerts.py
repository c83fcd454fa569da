"""The chart's PrometheusRule: valid for the Prometheus Operator, every expression parses as
PromQL and names only metrics (and labels) the worker and serving really expose, and every
annotation names only labels its expression's result carries."""

from __future__ import annotations

import re

import pytest

from agents.metrics import Metrics
from serving.metrics import ServingMetrics
from tests.k8s.promql_check import defined_metrics, parse, problems, result_labels
from tests.k8s.schemas_check import validate_prometheus_rule
from tests.k8s.test_helm import FULL, by_kind, manifests

METRICS = defined_metrics()
ON = {"alerts": {"enabled": True}}
# Prometheus's alert templating: `$labels.x`, `$value`, and these functions of it.
TEMPLATE_FUNCTIONS = {"printf", "humanizeDuration", "humanizePercentage", "humanize"}


def rules(values: dict) -> tuple[dict, list[dict]]:
    (rule,) = by_kind(manifests(values), "PrometheusRule")
    return rule, [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_metric_list_is_read_from_the_code_that_defines_the_metrics():
    """The source scan sees every family the real registries expose (a scan that missed one
    would let a rule on a real metric fail, or worse, hide nothing)."""
    exposed = set()
    for registry in (Metrics().registry, ServingMetrics().registry):
        for family in registry.collect():
            exposed.add(family.name + ("_total" if family.type == "counter" else
                                       "_count" if family.type == "histogram" else ""))
    assert exposed <= set(METRICS)
    assert {"loopline_drift_checks_total", "loopline_serving_request_seconds_bucket"} <= set(METRICS)


def test_alerts_are_off_by_default():
    assert not by_kind(manifests({}), "PrometheusRule")


@pytest.mark.parametrize("values", [ON, FULL], ids=["defaults", "full"])
def test_the_rule_is_a_valid_prometheus_rule_with_severity_and_annotations(values):
    rule, alerts = rules(values)
    validate_prometheus_rule(rule)
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["for"] and alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_the_strict_crd_schema_refuses_a_misspelt_field_and_a_bad_duration():
    rule, _ = rules(ON)
    rule["spec"]["groups"][0]["rules"][0]["annotation"] = {}
    with pytest.raises(AssertionError, match="annotation"):
        validate_prometheus_rule(rule)
    rule, _ = rules(ON)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    with pytest.raises(AssertionError, match="does not match"):
        validate_prometheus_rule(rule)


@pytest.mark.parametrize("values", [ON, FULL], ids=["defaults", "full"])
def test_every_expression_parses_and_names_existing_metrics_and_labels(values):
    _, alerts = rules(values)
    for alert in alerts:
        assert problems(alert["expr"], METRICS) == [], alert["alert"]


def test_the_checker_catches_a_renamed_metric_a_missing_label_and_bad_promql():
    assert problems("increase(loopline_decision_total[5m]) > 0", METRICS) == [
        "unknown metric loopline_decision_total"]
    assert problems('loopline_consumer_lag{model="a"} > 1', METRICS) == ["loopline_consumer_lag has no label model"]
    assert problems("sum(rate(loopline_consumer_lag[5m]) > 1", METRICS)[0].startswith("does not parse")
    assert problems("rat(loopline_consumer_lag[5m])", METRICS)[0].startswith("does not parse")


@pytest.mark.parametrize("values", [ON, FULL], ids=["defaults", "full"])
def test_annotations_name_only_labels_the_alert_carries(values):
    _, alerts = rules(values)
    for alert in alerts:
        carried = result_labels(parse(alert["expr"]), METRICS)
        for text in alert["annotations"].values():
            actions = re.findall(r"\{\{(.*?)\}\}", text)
            assert text.count("{{") == text.count("}}") == len(actions), text
            for action in actions:
                assert set(re.findall(r"\$labels\.(\w+)", action)) <= carried, (alert["alert"], action)
                words = set(re.findall(r"\b([a-zA-Z]\w*)\b", re.sub(r'"[^"]*"|\$\w+(\.\w+)?', "", action)))
                assert words <= TEMPLATE_FUNCTIONS, (alert["alert"], action)


def test_the_alerts_cover_what_the_issue_asks_for():
    _, alerts = rules(ON)
    exprs = {r["alert"]: r["expr"] for r in alerts}
    assert 'loopline_drift_checks_total{outcome="drifted"}' in exprs["LooplineDriftDetected"]
    assert 'decision="deploy",outcome="rolled_back"' in exprs["LooplineRolledBack"]
    assert 'outcome="failed"' in exprs["LooplineTrainingsFailing"] and "unless" in exprs["LooplineTrainingsFailing"]
    assert "loopline_consumer_lag" in exprs["LooplineConsumerLag"]
    assert "loopline_dead_letters_total" in exprs["LooplineDeadLetters"]
    assert "loopline_data_to_deployment_seconds_bucket" in exprs["LooplineDataToDeploymentSlow"]
    assert "loopline_serving_ready" in exprs["LooplineServingReplicaNotReady"]
    assert "loopline_serving_errors_total" in exprs["LooplineServingErrors"]
    without_serving = {r["alert"] for r in rules({**ON, "serving": {"enabled": False}})[1]}
    assert not any("Serving" in name for name in without_serving)


def test_thresholds_and_selector_labels_come_from_values():
    rule, alerts = rules({"alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                                     "extraLabels": {"team": "ml"},
                                     "consumerLag": {"threshold": 50, "for": "3m"},
                                     "trainingFailures": {"count": 2, "window": "1h"}}})
    validate_prometheus_rule(rule)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    by_name = {r["alert"]: r for r in alerts}
    lag = by_name["LooplineConsumerLag"]
    assert lag["expr"].endswith("> 50") and lag["for"] == "3m" and "over 50 for 3m" in lag["annotations"]["description"]
    assert "[1h])) >= 2" in by_name["LooplineTrainingsFailing"]["expr"]
    assert all(r["labels"]["team"] == "ml" for r in alerts)
