"""`drift:` and `metrics:` blocks of loopline.yaml: mapped to plain policies, typos refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.policies import DriftPolicy, MetricPolicy
from loopline.config import ConfigError, parse

BASE = {"name": "m", "pipeline": {"steps": [{"name": "evaluate", "command": ["true"]}]}}


def model(**blocks):
    return parse({"models": [{**BASE, **blocks}]}, Path("/cfg/loopline.yaml"))["m"]


def test_no_blocks_no_monitoring():
    m = model()
    assert m.drift is None and m.metrics is None


def test_blocks_become_policies():
    m = model(drift={"columns": ["f0", "f1", "kind"], "categorical": ["kind"], "num_method": "ks",
                     "cat_method": "chisquare", "methods": {"f1": "psi"}, "thresholds": {"f0": 0.01},
                     "drift_share": 0.3, "predictions": False, "prediction_rows": 500},
              metrics={"metric": "accuracy", "floor": 0.85, "window_seconds": 30, "min_count": 50,
                       "rollback_guard_seconds": 900})
    assert m.drift == DriftPolicy(columns=("f0", "f1", "kind"), categorical=("kind",), num_method="ks",
                                  cat_method="chisquare", methods={"f1": "psi"},
                                  thresholds={"f0": 0.01}, drift_share=0.3, check_predictions=False,
                                  prediction_rows=500)
    assert m.metrics == MetricPolicy(floor=0.85, window_seconds=30, min_count=50,
                                     rollback_guard_seconds=900)


@pytest.mark.parametrize("blocks, message", [
    ({"drift": {"num_method": "kss"}}, "models[0].drift.num_method: Value error, unknown drift method 'kss'"),
    ({"drift": {"methods": {"f0": "nope"}}}, "unknown drift method 'nope'"),
    ({"drift": {"drift_share": 0}}, "models[0].drift.drift_share"),
    ({"drift": {"columns": ["a"], "thresholds": {"b": 0.1}}}, "not in 'columns': ['b']"),
    ({"drift": {"treshold": 0.1}}, "models[0].drift.treshold: unknown key"),
    ({"metrics": {"metric": "accuracy"}}, "models[0].metrics.floor: required key is missing"),
    ({"metrics": {"floor": 0.8, "metric": "auc"}}, "unknown online metric 'auc'"),
    ({"metrics": {"floor": 0.8, "window_seconds": 0}}, "models[0].metrics.window_seconds"),
])
def test_typos_fail_with_the_key_and_the_reason(blocks, message):
    with pytest.raises(ConfigError, match=None) as info:
        model(**blocks)
    assert str(info.value).startswith("/cfg/loopline.yaml: ") and message in str(info.value)


def test_the_repository_config_monitors_the_classifier():
    from loopline.config import load

    classifier = load(Path(__file__).resolve().parents[2] / "loopline.yaml")["classifier"]
    assert classifier.drift is not None and classifier.drift.num_method == "wasserstein"
