"""The pipeline model every launcher shares: steps, a launch request and a run's status.

A training "job" is really a small DAG (prepare -> train -> evaluate, like TFX
components or an Argo Workflow). The model is plain frozen data, validated once
at construction, so a bad pipeline definition fails when it is loaded rather
than halfway through a run on some cluster. Launchers (local process,
Kubernetes Job, Argo Workflow) only translate it. Pure: no I/O, no environment.

Steps pass values along through outputs: a step writes a JSON object of outputs,
later steps read them through `{{steps.<step>.outputs.<name>}}` placeholders in
their command (Argo's syntax) or through a `when` condition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from triggers import conditions

__all__ = [
    "FAILED",
    "PENDING",
    "RUNNING",
    "SKIPPED",
    "SUCCEEDED",
    "TERMINAL_PHASES",
    "LaunchSpec",
    "Pipeline",
    "PipelineError",
    "RunStatus",
    "Step",
    "UnknownOutputError",
    "placeholder_refs",
    "render_command",
    "render_value",
]

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Skipped"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})

STEP_NAME_MAX = 40
_STEP_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_DNS_LABEL_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
PLACEHOLDER_RE = re.compile(r"\{\{\s*steps\.([a-z0-9-]+)\.outputs\.([A-Za-z0-9_][A-Za-z0-9_-]*)\s*\}\}")
# Anything that starts like a step placeholder; used to reject typos instead of passing them through.
_PLACEHOLDER_LIKE_RE = re.compile(r"\{\{\s*steps\.[^}]*\}?\}?")
_STEP_KEYS = frozenset({"name", "command", "depends", "when", "env", "image", "timeout_seconds",
                        "retries", "retry_backoff_seconds", "sweep"})


class PipelineError(ValueError):
    """A pipeline definition that cannot run; the message names the step and the problem."""


class UnknownOutputError(LookupError):
    """A placeholder names an output the upstream step did not write (found at run time)."""

    def __init__(self, step: str, ref_step: str, output: str) -> None:
        super().__init__(
            f"step {step}: unknown output {ref_step}.{output} "
            f"(placeholder {{{{steps.{ref_step}.outputs.{output}}}}})"
        )
        self.step, self.ref_step, self.output = step, ref_step, output


@dataclass(frozen=True)
class Step:
    name: str
    command: tuple[str, ...]  # argv; never run through a shell
    depends: tuple[str, ...] = ()
    when: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    timeout_seconds: float | None = None
    retries: int = 0                    # a failing step runs again up to this many times...
    retry_backoff_seconds: float = 1.0  # ...after 1x, 2x, 4x... this pause
    # A sweep step: its command is one trial, run many times by triggers.sweep (plain data,
    # validated by loopline.config.SweepConfig; the keys are listed in triggers.sweep).
    sweep: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Accept lists from YAML/JSON, but leave a bare string alone so validation can
        # reject it: tuple("python train.py") would silently become single characters.
        for name in ("command", "depends"):
            value = getattr(self, name)
            if isinstance(value, Iterable) and not isinstance(value, (str, bytes, tuple)):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.env, Mapping):
            object.__setattr__(self, "env", dict(self.env))  # defensive copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": list(self.command),
            "depends": list(self.depends),
            "when": self.when,
            "env": dict(self.env),
            "image": self.image,
            "timeout_seconds": self.timeout_seconds,
            "retries": self.retries,
            "retry_backoff_seconds": self.retry_backoff_seconds,
            **({"sweep": dict(self.sweep)} if self.sweep is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        if not isinstance(data, Mapping):
            raise PipelineError(f"a step must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - _STEP_KEYS)
        label = data.get("name", "?")
        if unknown:
            raise PipelineError(f"step {label!r}: unknown field(s) {', '.join(unknown)}")
        missing = [key for key in ("name", "command") if key not in data]
        if missing:
            raise PipelineError(f"step {label!r}: missing field(s) {', '.join(missing)}")
        # null means "default" for the optional fields (YAML writes `when:` as null).
        return cls(**{key: value for key, value in data.items() if value is not None or key in ("name", "command")})


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if isinstance(self.steps, Iterable) and not isinstance(self.steps, tuple):
            object.__setattr__(self, "steps", tuple(self.steps))
        _raise_all(_shape_errors(self.steps))
        order = _topological_order(self.steps)
        ancestors = _ancestors(order)
        _raise_all(_reference_errors(order, ancestors))
        # Derived, not fields: excluded from __eq__/__repr__ and from to_dict().
        object.__setattr__(self, "_order", tuple(order))
        object.__setattr__(self, "_ancestors", ancestors)
        object.__setattr__(self, "_by_name", {step.name: step for step in self.steps})

    def order(self) -> list[Step]:
        """Topological order; among steps that are ready, declaration order (stable)."""
        return list(self._order)  # type: ignore[attr-defined]

    def step(self, name: str) -> Step:
        try:
            return self._by_name[name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no step named {name!r}") from None

    def upstream(self, name: str) -> frozenset[str]:
        """Direct and indirect dependencies of a step."""
        self.step(name)
        return self._ancestors[name]  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        steps = data.get("steps") if isinstance(data, Mapping) else None
        if not isinstance(steps, list):
            raise PipelineError("a pipeline must be a mapping with a 'steps' list")
        return cls(tuple(Step.from_dict(step) for step in steps))


@dataclass(frozen=True)
class LaunchSpec:
    run_name: str  # from naming.run_name(...)
    model: str
    pipeline: Pipeline
    env: Mapping[str, str]  # request parameters: LOOPLINE_MODEL, LOOPLINE_IDEMPOTENCY_KEY, ...
    workdir: str  # cwd for the steps

    def __post_init__(self) -> None:
        # The run name becomes a directory and a Kubernetes object name: check it early.
        if not isinstance(self.run_name, str) or not _DNS_LABEL_RE.fullmatch(self.run_name):
            raise ValueError(f"run_name {self.run_name!r} is not a DNS-1123 label (use naming.run_name)")
        if not _is_str_map(self.env):
            raise ValueError("LaunchSpec.env must map strings to strings")
        object.__setattr__(self, "env", dict(self.env))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "model": self.model,
            "pipeline": self.pipeline.to_dict(),
            "env": dict(self.env),
            "workdir": self.workdir,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaunchSpec:
        return cls(
            run_name=data["run_name"],
            model=data["model"],
            pipeline=Pipeline.from_dict(data["pipeline"]),
            env=data.get("env", {}),
            workdir=data["workdir"],
        )


@dataclass(frozen=True)
class RunStatus:
    run_name: str
    model: str
    phase: str  # Pending | Running | Succeeded | Failed
    outputs: Mapping[str, Mapping[str, Any]]  # step -> its outputs
    steps: Mapping[str, str]  # step -> Pending | Running | Succeeded | Failed | Skipped
    reason: str | None = None
    log_tail: tuple[str, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "model": self.model,
            "phase": self.phase,
            "outputs": {step: dict(values) for step, values in self.outputs.items()},
            "steps": dict(self.steps),
            "reason": self.reason,
            "log_tail": list(self.log_tail),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunStatus:
        return cls(
            run_name=data["run_name"],
            model=data["model"],
            phase=data["phase"],
            outputs=data.get("outputs") or {},
            steps=data.get("steps") or {},
            reason=data.get("reason"),
            log_tail=tuple(data.get("log_tail") or ()),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )


# --- placeholders -------------------------------------------------------------------


def placeholder_refs(item: str) -> list[tuple[str, str]]:
    """(step, output) pairs referenced by one command item."""
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER_RE.finditer(item)]


def render_value(value: Any) -> str:
    """How an output value appears inside argv: strings verbatim, everything else as JSON.

    JSON (not str()) so booleans/null read the same as in `when` ("true", not "True").
    """
    return value if isinstance(value, str) else json.dumps(value)


def render_command(step: Step, outputs: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The step's argv with placeholders filled in; each item stays exactly one argv element."""

    def substitute(match: re.Match[str]) -> str:
        ref_step, output = match.group(1), match.group(2)
        values = outputs.get(ref_step)
        if not isinstance(values, Mapping) or output not in values:
            raise UnknownOutputError(step.name, ref_step, output)
        return render_value(values[output])

    return tuple(PLACEHOLDER_RE.sub(substitute, item) for item in step.command)


# --- validation ---------------------------------------------------------------------


def _raise_all(errors: list[str]) -> None:
    if errors:
        raise PipelineError("; ".join(errors))


def _shape_errors(steps: Any) -> list[str]:
    """Per-step problems plus duplicates and unknown dependencies (everything but the graph)."""
    if not isinstance(steps, tuple) or not steps:
        return ["pipeline has no steps"]
    errors: list[str] = []
    names = [getattr(step, "name", None) for step in steps]
    known = set(names)
    seen: set[str] = set()
    for index, step in enumerate(steps):
        if not isinstance(step, Step):
            errors.append(f"step #{index}: expected a Step, got {type(step).__name__}")
            continue
        if step.name in seen:
            errors.append(f"duplicate step name {step.name!r}")
        seen.add(step.name)
        errors.extend(_step_errors(step, known))
    return errors


def _step_errors(step: Step, known: set[Any]) -> list[str]:
    label = f"step {step.name!r}"
    errors: list[str] = []
    if not isinstance(step.name, str) or not _STEP_NAME_RE.fullmatch(step.name) or len(step.name) > STEP_NAME_MAX:
        errors.append(
            f"{label}: bad name (use lowercase letters, digits and '-', start and end with a letter "
            f"or digit, at most {STEP_NAME_MAX} characters)"
        )
    errors.extend(_command_errors(step, label))
    if not isinstance(step.depends, tuple) or not all(isinstance(d, str) for d in step.depends):
        errors.append(f"{label}: depends must be a list of step names")
    else:
        errors.extend(f"{label}: depends on unknown step {dep!r}" for dep in step.depends if dep not in known)
    if not _is_str_map(step.env):
        errors.append(f"{label}: env must map strings to strings")
    if step.image is not None and not isinstance(step.image, str):
        errors.append(f"{label}: image must be a string")
    if step.timeout_seconds is not None and not _positive_number(step.timeout_seconds):
        errors.append(f"{label}: timeout_seconds must be a positive number")
    if step.when is not None and not isinstance(step.when, str):
        errors.append(f"{label}: when must be a string")
    if step.sweep is not None and not isinstance(step.sweep, Mapping):
        errors.append(f"{label}: sweep must be a mapping")
    return errors


def _command_errors(step: Step, label: str) -> list[str]:
    if isinstance(step.command, str):
        return [f"{label}: command must be a list of argv items, not a string (commands never run through a shell)"]
    if not isinstance(step.command, tuple):
        return [f"{label}: command must be a list of argv items"]
    if not step.command:
        return [f"{label}: command is empty"]
    errors = [
        f"{label}: command item {i} must be a string, got {type(item).__name__}"
        for i, item in enumerate(step.command)
        if not isinstance(item, str)
    ]
    for item in step.command:
        if isinstance(item, str):
            errors.extend(
                f"{label}: malformed placeholder {bad!r} (expected {{{{steps.<step>.outputs.<name>}}}})"
                for bad in _PLACEHOLDER_LIKE_RE.findall(item)
                if not PLACEHOLDER_RE.fullmatch(bad)
            )
    return errors


def _topological_order(steps: tuple[Step, ...]) -> list[Step]:
    """Kahn's algorithm, always taking the first ready step in declaration order."""
    placed: set[str] = set()
    order: list[Step] = []
    remaining = list(steps)
    while remaining:
        ready = next((s for s in remaining if all(d in placed for d in s.depends)), None)
        if ready is None:
            raise PipelineError(f"cycle in depends: {' -> '.join(_find_cycle(remaining))}")
        remaining.remove(ready)
        placed.add(ready.name)
        order.append(ready)
    return order


def _find_cycle(remaining: list[Step]) -> list[str]:
    """One cycle among steps that could not be ordered, as a -> b -> a ("depends on")."""
    by_name = {s.name: s for s in remaining}
    path: list[str] = []
    name = remaining[0].name
    # Every remaining step has an unplaced dependency, so walking them must revisit a name.
    while name not in path:
        path.append(name)
        name = next(d for d in by_name[name].depends if d in by_name)
    return path[path.index(name) :] + [name]


def _ancestors(order: list[Step]) -> dict[str, frozenset[str]]:
    result: dict[str, frozenset[str]] = {}
    for step in order:  # dependencies come first, so their sets are ready
        acc: set[str] = set(step.depends)
        for dep in step.depends:
            acc |= result[dep]
        result[step.name] = frozenset(acc)
    return result


def _reference_errors(order: list[Step], ancestors: dict[str, frozenset[str]]) -> list[str]:
    """`when` and placeholders may only read steps that are guaranteed to have run before."""
    errors: list[str] = []
    for step in order:
        label = f"step {step.name!r}"
        upstream = ancestors[step.name]
        if step.when is not None:
            try:
                cond = conditions.parse(step.when)
            except conditions.ConditionError as exc:
                errors.append(f"{label}: invalid when: {exc}")
            else:
                if cond.step not in upstream:
                    errors.append(
                        f"{label}: when {step.when!r} references step {cond.step!r}, "
                        f"which is not upstream of {step.name!r} (add it to depends)"
                    )
        for item in step.command:
            for ref_step, output in placeholder_refs(item):
                if ref_step not in upstream:
                    errors.append(
                        f"{label}: placeholder {{{{steps.{ref_step}.outputs.{output}}}}} references step "
                        f"{ref_step!r}, which is not upstream of {step.name!r} (add it to depends)"
                    )
    return errors


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
