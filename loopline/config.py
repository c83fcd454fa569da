"""`loopline.yaml`: the models, their pipelines, retrain policies, gates and deploy targets.

Validated once at load, with errors that name the file, the key, what is wrong and what was
expected, so a typo fails the worker's start instead of the first training. The result is
turned into the plain policy and pipeline objects of `agents` and `triggers`: the agents never
see YAML.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.catalog import SEPARATOR, Catalog
from agents.policies import DriftPolicy, Gate, MetricPolicy, RetrainPolicy
from agents.policy.metric import METRICS
from agents.policy.promotion import Check
from agents.policy.rollout import RolloutPolicy
from loopline.kube_config import KubernetesConfig, pipeline_problems
from adapters.drift import METHODS as DRIFT_METHODS
from triggers.pipeline import Pipeline, PipelineError, Step

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEFAULT_MEMBER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"


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


class MemberOverride(_Strict):
    """What one member of a family does differently: its params (merged over the family's) and
    retrain keys (each replaces the family's)."""
    params: dict[str, str] = {}
    retrain: dict[str, Any] = {}


class FamilyConfig(ModelConfig):
    """Many models that share a pipeline, policies and gate, told apart by a key (agents.catalog):
    every key of a model, plus who the members are and what a member key may look like."""
    members: list[str] = []                  # exist from the start; the others come with their first event
    member_pattern: str = DEFAULT_MEMBER_PATTERN   # a member key must match it whole
    max_members: int = Field(100_000, ge=1)  # a flood of made-up keys stops here (dead-lettered)
    overrides: dict[str, MemberOverride] = {}

    @field_validator("name")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if SEPARATOR in value:
            raise ValueError(f"a family name cannot contain {SEPARATOR!r}: it separates the family "
                             "from the member key in a member's name")
        return value

    @field_validator("member_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _keys(self):
        pattern = re.compile(self.member_pattern)
        for where, keys in (("members", self.members), ("overrides", list(self.overrides))):
            for key in keys:
                why = member_key_problem(self.name, key, pattern)
                if why:
                    raise ValueError(f"{where}: {why}")
        if len(set(self.members)) != len(self.members):
            raise ValueError("members: a member is listed twice")
        if len(self.members) > self.max_members:
            raise ValueError(f"members: {len(self.members)} listed, above max_members ({self.max_members})")
        return self


def member_key_problem(family: str, key: str, pattern: re.Pattern) -> str | None:
    if not pattern.fullmatch(key):
        return f"member key {key!r} does not match member_pattern {pattern.pattern!r}"
    if not MODEL_NAME.match(f"{family}{SEPARATOR}{key}"):
        return (f"member name {family}{SEPARATOR}{key!r} is not a valid model name (letters, digits, "
                "_ . - ; at most 100 characters)")
    return None


class FileConfig(_Strict):
    models: list[ModelConfig] = []
    families: list[FamilyConfig] = []

    @model_validator(mode="after")
    def _something(self):
        if not self.models and not self.families:
            raise ValueError("name at least one model (models:) or family (families:)")
        return self


class Model:
    """One model as the worker uses it: plain policy objects and a validated pipeline."""

    family: str | None = None                # a family member's family and key (agents.catalog)
    member: str | None = None

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


def load(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        # libyaml's loader where PyYAML has it: 2.7x faster on a 10,000-model file (bench.scale)
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw, path)


def parse(raw, path: Path) -> Catalog:
    try:
        cfg = FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err, raw) for err in exc.errors())) from None
    models: dict[str, Model] = {}
    for index, model_cfg in enumerate(cfg.models):
        if model_cfg.name in models:
            raise ConfigError(f"{path}: models[{index}].name: duplicate model name {model_cfg.name!r}")
        models[model_cfg.name] = _model(model_cfg, path, f"models[{index}]")
    families: dict[str, Family] = {}
    for index, family_cfg in enumerate(cfg.families):
        where = f"families[{index}]"
        if family_cfg.name in families or family_cfg.name in models:
            raise ConfigError(f"{path}: {where}.name: {family_cfg.name!r} is already the name of a "
                              "model or family")
        clash = next((m for m in models if m.startswith(family_cfg.name + SEPARATOR)), None)
        if clash:
            raise ConfigError(f"{path}: {where}.name: the model {clash!r} would read as a member of "
                              f"family {family_cfg.name!r}: rename one of them")
        families[family_cfg.name] = Family(family_cfg, _model(family_cfg, path, where), path, where)
    catalog = Catalog(models, families)
    for family_cfg in cfg.families:
        for key in family_cfg.members:
            catalog.get(f"{family_cfg.name}{SEPARATOR}{key}")
    return catalog


def configured(catalog: Catalog) -> dict[str, Model]:
    """Each plain model, and each family once under its own name (its members share it): what the
    worker sizes its launchers, distributed runs and drift pool by at start-up, before any
    member exists (triggers.per_model finds a member's entry)."""
    plain = {name: m for name, m in catalog.items() if m.family is None}
    return {**plain, **{name: family.template for name, family in catalog.families.items()}}


def member_alias(catalog: Catalog):
    """`name` → the deploy alias of the family member it names, or None: what serving takes in
    on first request (None too when the file has no family)."""
    if not catalog.families:
        return None

    def alias(name: str) -> str | None:
        model = catalog.get(name)
        return model.alias if model is not None and model.family is not None else None
    return alias


def _model(model_cfg: ModelConfig, path: Path, where: str) -> Model:
    """The checks that span keys (pydantic has done each key), then the model."""
    if model_cfg.gate.from_step not in {s.name for s in model_cfg.pipeline.steps}:
        raise ConfigError(f"{path}: {where}.gate.from_step: no step named "
                          f"{model_cfg.gate.from_step!r} in the pipeline")
    if model_cfg.rollout.strategy != "direct" and model_cfg.metrics is None:
        raise ConfigError(f"{path}: {where}.rollout.strategy: {model_cfg.rollout.strategy!r} "
                          "is decided by online feedback: add a 'metrics' section (the online "
                          "metric each arm is scored by)")
    for step_index, step in enumerate(model_cfg.pipeline.steps):
        if step.sweep is not None:
            problem = _cluster_sweep_problem(model_cfg.pipeline, step)
            if problem:
                raise ConfigError(f"{path}: {where}.pipeline.steps[{step_index}].sweep: {problem}")
    for key, problem in pipeline_problems(model_cfg.pipeline):
        raise ConfigError(f"{path}: {where}.pipeline.{key}: {problem}")
    try:
        return Model(model_cfg, path.parent)
    except PipelineError as exc:
        raise ConfigError(f"{path}: {where}.pipeline: {exc}") from None


class Family:
    """A family's members as models (agents.catalog.Family): each a copy of the family's model
    with its own name, and its override's params and retrain keys. The copies share the family's
    pipeline and policy objects (all immutable), so a member costs a few hundred bytes."""

    def __init__(self, cfg: FamilyConfig, template: Model, path: Path, where: str):
        self.name, self.max_members = cfg.name, cfg.max_members
        self.template, self.pattern = template, re.compile(cfg.member_pattern)
        self.overridden: dict[str, tuple[dict[str, str], RetrainPolicy]] = {}
        for key, override in cfg.overrides.items():
            try:
                retrain = RetrainConfig.model_validate({**cfg.retrain.model_dump(), **override.retrain})
            except ValidationError as exc:
                raise ConfigError(f"{path}: " + "; ".join(
                    f"{where}.overrides.{key}.retrain.{_describe(err, None)}" for err in exc.errors())) from None
            self.overridden[key] = ({**cfg.params, **override.params},
                                    RetrainPolicy(**retrain.model_dump()))

    def problem(self, key: str) -> str | None:
        return member_key_problem(self.name, key, self.pattern)

    def member(self, key: str) -> Model:
        model = copy.copy(self.template)
        model.name, model.family, model.member = f"{self.name}{SEPARATOR}{key}", self.name, key
        if key in self.overridden:
            model.params, model.retrain = self.overridden[key]
        return model


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
    if not key:                       # a check of the whole file: no key to name, no input to show
        return err["msg"].removeprefix("Value error, ")
    return f"{key}: {err['msg']} (got {err.get('input')!r})"
