"""The evaluator reads the evaluate step's report and fails closed on anything missing."""

from __future__ import annotations

import math

import pytest

from agents import policies as p
from agents.evaluator import read_report

GATE = p.Gate(metric="accuracy", min_value=0.7, min_improvement=0.01)


def outputs(**evaluate):
    return {"train": {"model_version": "3"}, "evaluate": evaluate}


@pytest.mark.parametrize("out, passed, phrase", [
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": 0.9},
                         champion_version=None, champion_metrics=None),
                 True, "no champion", id="first model passes on the bar"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": 0.6}),
                 False, "0.7", id="under the bar"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": 0.9},
                         champion_version="2", champion_metrics={"accuracy": 0.85}),
                 True, "improves on v2", id="beats the champion"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": 0.9},
                         champion_version="2", champion_metrics={"accuracy": 0.895}),
                 False, "does not improve enough", id="not enough"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": math.nan}),
                 False, "accuracy", id="NaN metric"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={}),
                 False, "accuracy", id="missing metric"),
    pytest.param(outputs(candidate_version="3", candidate_metrics={"accuracy": 0.95},
                         champion_version="2", champion_metrics=None,
                         champion_error="OSError: artifact gone"),
                 False, "champion could not be scored", id="champion unscorable fails closed"),
    pytest.param({"train": {}, "evaluate": {}}, False, "no candidate version", id="no model logged"),
])
def test_read_report(out, passed, phrase):
    version, decision = read_report(out, "evaluate", GATE)
    assert isinstance(decision, p.Promote) is passed
    assert any(phrase in reason for reason in decision.reasons), decision.reasons
    if out["train"].get("model_version"):
        assert version == "3"
