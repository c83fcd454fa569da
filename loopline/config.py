"""`loopline.yaml`: the models, their pipelines, retrain policies, gates and deploy targets.

Validated once at load, with errors that name the file, the key, what is wrong and what was
expected, so a typo fails the worker's start instead of the first training. The result is
turned into the plain policy and pipeline objects of `agents` and `triggers`: the agents never
see YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.policies import DriftPolicy, Gate, MetricPolicy, RetrainPolicy
from agents.policy.metric import METRICS
from agents.policy.promotion import Check
from agents.policy.rollout import RolloutPolicy
from loopline.kube_config import KubernetesConfig, pipeline_problems
from adapters.drift import METHODS as DRIFT_METHODS
from triggers.pipeline import Pipeline, PipelineError, Step

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepParamConfig(_Strict):
    """One dimension of a sweep's search space (Optuna's int / float / categorical)."""
    type: Literal["int", "float", "categorical"]
    low: float | None = Field(None, allow_inf_nan=False)
    high: float | None = Field(None, allow_inf_nan=False)
    log: bool = False
    choices: list[str | int | float | bool] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _shape(self):
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical parameter needs choices")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical parameter takes choices, not low/high/log")
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes low/high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs whole low and high")
        return self


class SweepConfig(_Strict):
    """A sweep step: its command is one trial (triggers.sweep runs it `trials` times)."""
    space: dict[str, SweepParamConfig] = Field(min_length=1)
    objective: str = Field(min_length=1)               # a key of the trial's candidate_metrics
    direction: Literal["maximize", "minimize"] = "maximize"
    trials: int = Field(ge=1, le=10_000)
    parallelism: int = Field(1, ge=1, le=256)
    max_failed_trials: int = Field(3, ge=0)
    pruner: Literal["median", "none"] = "median"
    seed: int | None = None                            # the sampler's; None: random

    @field_validator("space")
    @classmethod
    def _names(cls, value: dict) -> dict:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"parameter name {name!r} must be a valid identifier "
                                 "(it becomes LOOPLINE_PARAM_<NAME>)")
        return value


class StepConfig(_Strict):
    name: str
    command: list[str] = Field(min_length=1)
    depends: list[str] = []
    when: str | None = None
    env: dict[str, str] = {}
    image: str | None = None
    timeout_seconds: float | None = Field(None, gt=0)
    retries: int = Field(0, ge=0, le=20)
    retry_backoff_seconds: float = Field(1.0, gt=0)
    sweep: SweepConfig | None = None


class PipelineConfig(_Strict):
    launcher: Literal["local", "kubernetes", "argo"] = "local"
    workdir: str = "."                       # relative to the config file
    steps: list[StepConfig] = Field(min_length=1)
    kubernetes: KubernetesConfig | None = None   # pods of launcher kubernetes / argo (loopline/kube_config.py)


class RetrainConfig(_Strict):
    min_new_rows: int = Field(1000, ge=1)
    max_staleness_seconds: float | None = Field(None, gt=0)
    cooldown_seconds: float = Field(0.0, ge=0)
    window_batches: int = Field(8, ge=1)
    min_drift_share: float = Field(0.0, ge=0, le=1)
    in_flight_timeout_seconds: float | None = Field(None, gt=0)


class GateCheckConfig(_Strict):
    """One check of a gate: agents.policy.promotion.Check."""
    metric: str = Field(min_length=1, pattern=r"^[^@]+$")
    min_value: float | None = Field(None, allow_inf_nan=False)   # a ceiling when direction is lower
    min_change: float | None = Field(None, allow_inf_nan=False)  # vs the champion; None = not compared
    change: Literal["absolute", "relative"] = "absolute"
    direction: Literal["higher", "lower"] = "higher"
    slice: str | None = Field(None, min_length=1, pattern=r"^[^@=]+$")   # a holdout column


class GateLatencyConfig(_Strict):
    max_p95_ms: float = Field(gt=0, allow_inf_nan=False)   # the evaluate step's candidate_latency_ms_p95


_SINGLE_METRIC_KEYS = ("metric", "min_value", "min_improvement", "higher_is_better")


class GateConfig(_Strict):
    """Either the single-metric gate (metric, min_value, min_improvement, higher_is_better) or
    `checks`; `latency` goes with either. The single metric is one check of the same meaning."""
    metric: str = Field("accuracy", min_length=1)
    min_value: float | None = Field(None, allow_inf_nan=False)   # absolute bar (a ceiling when lower is better)
    min_improvement: float = Field(0.0, allow_inf_nan=False)
    higher_is_better: bool = True
    checks: list[GateCheckConfig] | None = Field(None, min_length=1)
    latency: GateLatencyConfig | None = None
    from_step: str = "evaluate"              # the pipeline step that reports the scores

    @model_validator(mode="after")
    def _one_shape(self):
        if self.checks is not None:
            mixed = [k for k in _SINGLE_METRIC_KEYS if k in self.model_fields_set]
            if mixed:
                raise ValueError(f"checks replaces {', '.join(mixed)}: write that metric as one of the "
                                 "checks (min_improvement is min_change, higher_is_better is direction)")
            seen: set[tuple[str, str | None]] = set()
            for i, check in enumerate(self.checks):
                if (check.metric, check.slice) in seen:
                    raise ValueError(f"checks[{i}]: a second check of {check.metric!r}"
                                     + (f" on slice {check.slice!r}" if check.slice else ""))
                seen.add((check.metric, check.slice))
        return self

    def policy(self) -> Gate:
        latency = self.latency.max_p95_ms if self.latency is not None else None
        if self.checks is None:
            return Gate(metric=self.metric, min_value=self.min_value, min_improvement=self.min_improvement,
                        higher_is_better=self.higher_is_better, max_latency_p95_ms=latency)
        return Gate(checks=tuple(Check(**c.model_dump()) for c in self.checks), max_latency_p95_ms=latency)


class DeployConfig(_Strict):
    alias: str = "champion"


class RolloutConfig(_Strict):
    """How a candidate that passed the gate reaches traffic (agents.policy.rollout)."""
    strategy: Literal["direct", "canary", "ab", "shadow", "bandit"] = "direct"
    steps: list[float] = Field([0.05, 0.25, 0.5, 1.0], min_length=1)
    min_step_seconds: float = Field(60.0, ge=0)
    min_samples: int = Field(100, ge=1)
    max_step_seconds: float = Field(3600.0, gt=0)
    split: float = Field(0.5, gt=0, lt=1)
    duration_seconds: float | None = Field(None, gt=0)
    sample_size: int | None = Field(None, ge=1)
    unit_key: str | None = Field(None, min_length=1)
    algorithm: Literal["thompson", "epsilon_greedy", "ucb1"] = "thompson"
    epsilon: float = Field(0.1, ge=0, le=1)
    reward: Literal["bernoulli", "gaussian"] | None = None   # default: from the online metric
    confidence: float = Field(0.95, gt=0.5, lt=1)
    tolerance: float = Field(0.0, ge=0)
    auto_promote: bool = True

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        if any(not 0 < w <= 1 for w in value) or value != sorted(set(value)) or value[-1] != 1.0:
            raise ValueError("canary steps are shares of traffic in (0, 1], rising, ending at 1.0 "
                             f"(got {value})")
        return value

    @model_validator(mode="after")
    def _ab_ends(self):
        if self.strategy in ("ab", "shadow") and self.duration_seconds is None and self.sample_size is None:
            raise ValueError(f"strategy {self.strategy!r} needs duration_seconds or sample_size "
                             "(when to analyse)")
        return self


class DriftConfig(_Strict):
    """Drift monitoring against the champion's reference data (Evidently DataDriftPreset)."""
    columns: list[str] | None = None           # default: every column of the reference
    categorical: list[str] = []                # compared as categories; the rest as numbers
    num_method: str | None = None              # Evidently stat-test name; default: Evidently's pick
    cat_method: str | None = None
    methods: dict[str, str] = {}               # per column
    num_threshold: float | None = Field(None, ge=0)
    cat_threshold: float | None = Field(None, ge=0)
    thresholds: dict[str, float] = {}          # per column
    drift_share: float = Field(0.5, gt=0, le=1)   # share of drifted columns that is drift
    data: bool = True                          # check data-arrival batches
    predictions: bool = True                   # check the serving prediction log
    prediction_rows: int = Field(1000, ge=1)   # prediction-log rows per check

    @field_validator("num_method", "cat_method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        if value is not None and value not in DRIFT_METHODS:
            raise ValueError(f"unknown drift method {value!r} (one of: {', '.join(sorted(DRIFT_METHODS))})")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: dict[str, str]) -> dict[str, str]:
        for column, method in value.items():
            cls._method(method)
        return value

    @model_validator(mode="after")
    def _known_columns(self):
        if self.columns is not None:
            unknown = sorted((set(self.methods) | set(self.thresholds) | set(self.categorical))
                             - set(self.columns))
            if unknown:
                raise ValueError(f"methods/thresholds/categorical name columns not in 'columns': {unknown}")
        return self

    def policy(self) -> DriftPolicy:
        return DriftPolicy(
            columns=tuple(self.columns) if self.columns is not None else None,
            categorical=tuple(self.categorical), num_method=self.num_method,
            cat_method=self.cat_method, methods=dict(self.methods),
            num_threshold=self.num_threshold, cat_threshold=self.cat_threshold,
            thresholds=dict(self.thresholds), drift_share=self.drift_share,
            check_data=self.data, check_predictions=self.predictions,
            prediction_rows=self.prediction_rows)


class MetricsConfig(_Strict):
    """Online metric from serving feedback, in tumbling windows, with a floor and a rollback guard."""
    metric: str = "accuracy"
    floor: float                               # a ceiling for lower-is-better metrics (mae, ...)
    window_seconds: int = Field(60, ge=1)
    min_count: int = Field(20, ge=1)
    rollback_guard_seconds: float = Field(0.0, ge=0)   # 0: never roll back, retrain instead
    grace_seconds: float = Field(2.0, ge=0)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown online metric {value!r} (one of: {', '.join(sorted(METRICS))})")
        return value


class ModelConfig(_Strict):
    name: str
    pipeline: PipelineConfig
    retrain: RetrainConfig = RetrainConfig()
    gate: GateConfig = GateConfig()
    deploy: DeployConfig = DeployConfig()
    rollout: RolloutConfig = RolloutConfig()
    params: dict[str, str] = {}              # passed to every step as LOOPLINE_PARAM_<NAME>
    drift: DriftConfig | None = None
    metrics: MetricsConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError("must start with a letter or digit and use only letters, digits, _ . -")
        return value


class FileConfig(_Strict):
    models: list[ModelConfig] = Field(min_length=1)


class Model:
    """One model as the worker uses it: plain policy objects and a validated pipeline."""

    def __init__(self, cfg: ModelConfig, base: Path):
        self.name = cfg.name
        self.config = cfg
        self.launcher = cfg.pipeline.launcher
        self.workdir = str((base / cfg.pipeline.workdir).resolve())
        self.pipeline = Pipeline(tuple(
            Step(name=s.name, command=tuple(s.command), depends=tuple(s.depends), when=s.when,
                 env=dict(s.env), image=s.image, timeout_seconds=s.timeout_seconds,
                 retries=s.retries, retry_backoff_seconds=s.retry_backoff_seconds,
                 sweep=s.sweep.model_dump() if s.sweep is not None else None)
            for s in cfg.pipeline.steps))
        self.retrain = RetrainPolicy(**cfg.retrain.model_dump())
        self.gate = cfg.gate.policy()
        self.gate_step = cfg.gate.from_step
        self.alias = cfg.deploy.alias
        self.params = dict(cfg.params)
        self.drift = cfg.drift.policy() if cfg.drift is not None else None
        self.metrics = MetricPolicy(**cfg.metrics.model_dump()) if cfg.metrics is not None else None
        self.rollout = _rollout_policy(cfg)


def _rollout_policy(cfg: ModelConfig) -> RolloutPolicy:
    """0/1 online metrics (accuracy, error_rate) are Bernoulli rewards; mae and mse Gaussian."""
    rollout = cfg.rollout.model_dump(exclude={"reward", "steps"})
    metric = cfg.metrics.metric if cfg.metrics is not None else "accuracy"
    reward = cfg.rollout.reward or ("bernoulli" if metric in ("accuracy", "error_rate") else "gaussian")
    return RolloutPolicy(**rollout, steps=tuple(cfg.rollout.steps), reward=reward)


def load(path: str | Path) -> dict[str, Model]:
    path = Path(path)
    try:
        # libyaml's loader where PyYAML has it: 2.7x faster on a 10,000-model file (bench.scale)
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw, path)


def parse(raw, path: Path) -> dict[str, Model]:
    try:
        cfg = FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err, raw) for err in exc.errors())) from None
    models: dict[str, Model] = {}
    for index, model_cfg in enumerate(cfg.models):
        if model_cfg.name in models:
            raise ConfigError(f"{path}: models[{index}].name: duplicate model name {model_cfg.name!r}")
        if model_cfg.gate.from_step not in {s.name for s in model_cfg.pipeline.steps}:
            raise ConfigError(f"{path}: models[{index}].gate.from_step: no step named "
                              f"{model_cfg.gate.from_step!r} in the pipeline")
        if model_cfg.rollout.strategy != "direct" and model_cfg.metrics is None:
            raise ConfigError(f"{path}: models[{index}].rollout.strategy: {model_cfg.rollout.strategy!r} "
                              "is decided by online feedback: add a 'metrics' section (the online "
                              "metric each arm is scored by)")
        for step_index, step in enumerate(model_cfg.pipeline.steps):
            if step.sweep is not None:
                problem = _cluster_sweep_problem(model_cfg.pipeline, step)
                if problem:
                    raise ConfigError(f"{path}: models[{index}].pipeline.steps[{step_index}].sweep: {problem}")
        for key, problem in pipeline_problems(model_cfg.pipeline):
            raise ConfigError(f"{path}: models[{index}].pipeline.{key}: {problem}")
        try:
            models[model_cfg.name] = Model(model_cfg, path.parent)
        except PipelineError as exc:
            raise ConfigError(f"{path}: models[{index}].pipeline: {exc}") from None
    return models


def _cluster_sweep_problem(pipeline: PipelineConfig, step: StepConfig) -> str | None:
    """Why a sweep step cannot fan out on the pipeline's cluster launcher, or None."""
    if pipeline.launcher == "local":
        return None
    kube = pipeline.kubernetes
    if kube is not None and kube.distributed is not None:
        return "a sweep of distributed runs is not supported (one trial would need a group of pods)"
    if "LOOPLINE_SWEEP_STORAGE" not in step.env and not (kube is not None and kube.env_from_secrets):
        return (f"trial pods on {pipeline.launcher!r} share their study through an RDB: give the pods "
                "LOOPLINE_SWEEP_STORAGE (e.g. the MLflow PostgreSQL URL) through "
                "pipeline.kubernetes.env_from_secrets, or the step's env")
    return None


def _describe(err: dict, raw) -> str:
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see the README for the keys)"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"
