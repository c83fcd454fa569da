"""What the agents need from the outside world, as small protocols.

The agents decide and publish; starting runs and moving registry aliases are done through these
ports, implemented by `triggers` (launchers) and the composition root (the MLflow registry).
This keeps faust-free policies pure and mlflow out of the agent layer, and lets a test hand the
agents a real launcher with a real registry without patching anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from triggers.pipeline import LaunchSpec, RunStatus


class Launcher(Protocol):
    kind: str

    def submit(self, spec: LaunchSpec) -> bool: ...          # False: it already existed (idempotent)
    def poll(self) -> list[RunStatus]: ...                     # runs whose phase changed
    def mark_reported(self, run_name: str) -> None: ...
    def spec(self, run_name: str) -> LaunchSpec | None: ...


@dataclass(frozen=True)
class Champion:
    version: str | None                 # the version under the alias now
    history: tuple[str, ...] = ()       # versions that held the alias, oldest first
    last_event: str | None = None       # key of the event that last moved it (dedupes redelivery)


@dataclass(frozen=True)
class Challengers:
    versions: tuple[str, ...] = ()      # in a live rollout against the champion, oldest first
    last_event: str | None = None       # key of the event that set them (dedupes redelivery)


class Registry(Protocol):
    """Blocking calls: the agents run them in a thread, never on the event loop."""

    def champion(self, model: str, alias: str) -> Champion: ...

    def set_champion(self, model: str, alias: str, version: str, history: Sequence[str],
                     event_key: str) -> None: ...

    def record_evaluation(self, model: str, version: str, passed: bool,
                          reasons: Sequence[str]) -> None: ...

    def challengers(self, model: str) -> Challengers: ...

    def set_challengers(self, model: str, versions: Sequence[str], event_key: str) -> None:
        """The versions in a live rollout (the `challenger` alias names the newest); () ends it."""
        ...

    def record_lineage(self, model: str, version: str, ids: Mapping[str, str],
                       append: Mapping[str, str] | None = None) -> None:
        """Write lineage ids on the version (`loopline.lineage.<name>`), so `loopline lineage`
        still answers after the topics' retention: `ids` are set, `append` values are added to
        the JSON list kept under their name."""
        ...


@dataclass(frozen=True)
class DriftRequest:
    """One drift check: a batch (by URI) or prediction-log rows against a version's reference."""
    model: str
    model_version: str
    origin: str                                  # "data" | "predictions"
    dataset_version: str
    policy: Any                                  # agents.policy.drift.DriftPolicy
    uri: str | None = None                       # the batch, read where it lies (parquet)
    rows: tuple[Mapping[str, Any], ...] | None = None   # or the rows themselves
    report: bool = True                          # write the HTML report when drift is found


@dataclass(frozen=True)
class DriftResult:
    drifted: bool
    drift_share: float
    columns: Mapping[str, Mapping[str, Any]]     # column -> score, method, threshold, drifted
    reference_version: str                       # dataset versions the reference was drawn from
    rows: int
    report_uri: str | None = None
    seconds: float = 0.0
    reference_cached: bool = False


class NoReference(Exception):
    """The model version has no recorded reference data (trained before references existed)."""


class DriftChecker(Protocol):
    """Compares data with a version's reference off the event loop (a process pool, a job)."""

    async def check(self, request: DriftRequest) -> DriftResult: ...
