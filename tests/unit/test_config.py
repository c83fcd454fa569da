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
    pytest.param({}, "name at least one model (models:) or family (families:)", id="no models"),
    pytest.param({"models": []}, "name at least one model (models:) or family", id="empty models"),
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
    pytest.param({"models": [model(rollout={"strategy": "blue-green"})]}, "models[0].rollout.strategy",
                 id="unknown strategy"),
    pytest.param({"models": [model(rollout={"strategy": "canary"})]},
                 "models[0].rollout.strategy: 'canary' is decided by online feedback", id="no metrics"),
    pytest.param({"models": [model(rollout={"strategy": "canary", "steps": [0.5, 0.25, 1.0]},
                                   metrics={"floor": 0.5})]}, "models[0].rollout.steps", id="falling steps"),
    pytest.param({"models": [model(rollout={"strategy": "canary", "steps": [0.1, 0.5]},
                                   metrics={"floor": 0.5})]}, "ending at 1.0", id="steps short of 1"),
    pytest.param({"models": [model(rollout={"strategy": "ab"}, metrics={"floor": 0.5})]},
                 "needs duration_seconds or sample_size", id="ab without an end"),
    pytest.param({"models": [model(rollout={"strategy": "bandit", "algorithm": "softmax"},
                                   metrics={"floor": 0.5})]}, "models[0].rollout.algorithm", id="bad algorithm"),
    pytest.param({"models": [model(rollout={"strategy": "ab", "split": 1.5, "sample_size": 10},
                                   metrics={"floor": 0.5})]}, "models[0].rollout.split", id="split over 1"),
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


@pytest.mark.parametrize("metric, reward", [("accuracy", "bernoulli"), ("error_rate", "bernoulli"),
                                            ("mae", "gaussian")])
def test_a_rollout_becomes_the_policy_the_folder_and_analysis_read(tmp_path, metric, reward):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [model(
        rollout={"strategy": "canary", "steps": [0.1, 1.0], "min_samples": 50},
        metrics={"metric": metric, "floor": 0.5})]}))
    rollout = config.load(path)["clf"].rollout
    assert (rollout.strategy, rollout.steps, rollout.min_samples, rollout.reward) == (
        "canary", (0.1, 1.0), 50, reward)


def test_the_default_rollout_is_direct():
    assert config.load(REPO / "loopline.yaml")["classifier"].rollout.strategy == "direct"


# --- gates with several checks ---------------------------------------------------------------

from agents.policy.promotion import Check, Gate  # noqa: E402

SLICED = {"metric": "accuracy", "min_change": -0.02, "slice": "segment"}


@pytest.mark.parametrize("gate, message", [
    pytest.param({"checks": []}, "models[0].gate.checks: List should have at least 1 item", id="no checks"),
    pytest.param({"checks": [{"min_value": 0.7}]}, "models[0].gate.checks[0].metric: required key is missing",
                 id="check without metric"),
    pytest.param({"checks": [{"metric": "accuracy", "change": "percent"}]}, "models[0].gate.checks[0].change",
                 id="unknown change"),
    pytest.param({"checks": [{"metric": "accuracy", "direction": "up"}]}, "models[0].gate.checks[0].direction",
                 id="unknown direction"),
    pytest.param({"checks": [{"metric": "accuracy", "min_value": float("nan")}]},
                 "models[0].gate.checks[0].min_value", id="nan bar"),
    pytest.param({"checks": [{"metric": "accuracy", "min_change": "a lot"}]},
                 "models[0].gate.checks[0].min_change", id="change not a number"),
    pytest.param({"checks": [{"metric": "accuracy", "min_improvement": 0.01}]},
                 "models[0].gate.checks[0].min_improvement: unknown key", id="old key inside a check"),
    pytest.param({"checks": [{"metric": "accuracy", "slice": "segment=a"}]}, "models[0].gate.checks[0].slice",
                 id="slice with a value"),
    pytest.param({"checks": [{"metric": "accuracy@segment=a"}]}, "models[0].gate.checks[0].metric",
                 id="slice spelled in the metric"),
    pytest.param({"metric": "f1", "checks": [{"metric": "accuracy"}]}, "models[0].gate: Value error, checks "
                 "replaces metric", id="checks and the single metric"),
    pytest.param({"min_improvement": 0.01, "checks": [{"metric": "accuracy"}]}, "checks replaces min_improvement",
                 id="checks and min_improvement"),
    pytest.param({"checks": [SLICED, {**SLICED, "min_change": 0}]},
                 "checks[1]: a second check of 'accuracy' on slice 'segment'", id="duplicate check"),
    pytest.param({"latency": {"max_p95_ms": 0}}, "models[0].gate.latency.max_p95_ms", id="zero latency bar"),
    pytest.param({"latency": {}}, "models[0].gate.latency.max_p95_ms: required key is missing",
                 id="latency without a bar"),
    pytest.param({"latency": {"p95": 50}}, "models[0].gate.latency.p95: unknown key", id="latency typo"),
    pytest.param({"min_improvement": float("inf")}, "models[0].gate.min_improvement", id="infinite improvement"),
])
def test_gate_errors_name_the_key(tmp_path, gate, message):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [model(gate=gate)]}))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


@pytest.mark.parametrize("gate, expected", [
    pytest.param({"metric": "rmse", "min_value": 0.5, "min_improvement": 0.01, "higher_is_better": False},
                 Gate(metric="rmse", min_value=0.5, min_improvement=0.01, higher_is_better=False),
                 id="single metric unchanged"),
    pytest.param({"min_value": 0.7, "latency": {"max_p95_ms": 50}},
                 Gate(min_value=0.7, max_latency_p95_ms=50), id="single metric with latency"),
    pytest.param({"checks": [{"metric": "accuracy", "min_value": 0.7, "min_change": 0.01}, SLICED,
                             {"metric": "log_loss", "min_change": 0.05, "change": "relative", "direction": "lower"}],
                  "latency": {"max_p95_ms": 50}},
                 Gate(checks=(Check("accuracy", min_value=0.7, min_change=0.01),
                              Check("accuracy", min_change=-0.02, slice="segment"),
                              Check("log_loss", min_change=0.05, change="relative", direction="lower")),
                      max_latency_p95_ms=50), id="checks and latency"),
])
def test_a_gate_becomes_the_policy(tmp_path, gate, expected):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [model(gate=gate)]}))
    assert config.load(path)["clf"].gate == expected


def test_a_distributed_model_reaches_its_launcher_as_ranks(tmp_path):
    from loopline.launchers import distributed_runs

    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [
        model(name="ddp", pipeline={"launcher": "local", "kubernetes": {"distributed": {"workers": 3}},
                                    "steps": model()["pipeline"]["steps"]}),
        model(name="plain")]}))
    models = config.load(path)
    ranks = distributed_runs(models, "local")
    assert list(ranks) == ["ddp"] and ranks["ddp"].workers == 3 and ranks["ddp"].port == 29500
    assert distributed_runs(models, "kubernetes") == {}


def _sweep_model(launcher: str, kubernetes: dict, step_env: dict | None = None) -> dict:
    steps = model()["pipeline"]["steps"]
    steps[0]["sweep"] = {"space": {"alpha": {"type": "float", "low": 0.1, "high": 1.0}},
                         "objective": "accuracy", "trials": 4}
    if step_env is not None:
        steps[0]["env"] = step_env
    return model(pipeline={"launcher": launcher, "kubernetes": kubernetes, "steps": steps})


@pytest.mark.parametrize("launcher", ["kubernetes", "argo"])
def test_a_sweep_on_a_cluster_needs_a_study_every_pod_reaches(tmp_path, launcher):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [_sweep_model(launcher, {"image": "img"})]}))
    with pytest.raises(config.ConfigError, match=r"models\[0\]\.pipeline\.steps\[0\]\.sweep: trial pods on "
                                                 rf"'{launcher}' share their study through an RDB: .*LOOPLINE_SWEEP_STORAGE"):
        config.load(path)
    # from a Secret, or in the step's env: accepted
    path.write_text(yaml.safe_dump({"models": [_sweep_model(launcher, {"image": "img", "env_from_secrets": ["db"]})]}))
    assert config.load(path)["clf"].config.pipeline.steps[0].sweep.trials == 4
    path.write_text(yaml.safe_dump({"models": [_sweep_model(
        launcher, {"image": "img"}, {"LOOPLINE_SWEEP_STORAGE": "postgresql://db/optuna"})]}))
    assert config.load(path)["clf"].config.pipeline.steps[0].sweep is not None


def test_a_sweep_of_distributed_runs_is_refused(tmp_path):
    path = tmp_path / "loopline.yaml"
    path.write_text(yaml.safe_dump({"models": [_sweep_model(
        "kubernetes", {"image": "img", "env_from_secrets": ["db"], "distributed": {"workers": 2}})]}))
    with pytest.raises(config.ConfigError, match=r"steps\[0\]\.sweep: a sweep of distributed runs is not supported"):
        config.load(path)


