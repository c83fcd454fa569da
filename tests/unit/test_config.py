"""`loopline.yaml` validation: a typo is a clear error naming the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopline import config

REPO = Path(__file__).resolve().parents[2]


def model(**over):
    base = {"name": "clf", "pipeline": {"steps": [
        {"name": "train", "command": ["python", "train.py"]},
        {"name": "evaluate", "command": ["python", "eval.py"], "depends": ["train"]}]}}
    base.update(over)
    return base


def test_the_repository_config_loads():
    models = config.load(REPO / "loopline.yaml")
    clf = models["classifier"]
    assert [s.name for s in clf.pipeline.order()] == ["prepare", "train", "evaluate"]
    assert clf.retrain.min_new_rows == 2000 and clf.gate.min_improvement == 0.01
    assert clf.workdir == str(REPO)


@pytest.mark.parametrize("raw, message", [
    pytest.param({}, "models: required key is missing", id="no models"),
    pytest.param({"models": []}, "models: List should have at least 1 item", id="empty models"),
    pytest.param({"models": [model(name="bad name!")]}, "models[0].name", id="bad model name"),
    pytest.param({"models": [model(retrian={})]}, "models[0].retrian: unknown key", id="typo key"),
    pytest.param({"models": [model(retrain={"min_new_rows": 0})]}, "models[0].retrain.min_new_rows",
                 id="zero rows"),
    pytest.param({"models": [model(gate={"min_value": "high"})]}, "models[0].gate.min_value",
                 id="not a number"),
    pytest.param({"models": [model(), model()]}, "duplicate model name 'clf'", id="duplicate"),
    pytest.param({"models": [model(gate={"from_step": "score"})]}, "no step named 'score'",
                 id="gate step missing"),
    pytest.param({"models": [model(pipeline={"steps": [
        {"name": "a", "command": ["x"], "depends": ["b"]},
        {"name": "b", "command": ["x"], "depends": ["a"]}]}, gate={"from_step": "a"})]},
        "cycle", id="cycle"),
    pytest.param({"models": [model(pipeline={"launcher": "slurm", "steps": [
        {"name": "evaluate", "command": ["x"]}]})]}, "models[0].pipeline.launcher", id="bad launcher"),
])
def test_errors_name_file_key_and_expectation(tmp_path, raw, message):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(tmp_path / "bad.yaml")
