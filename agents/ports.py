"""What the agents need from the outside world, as small protocols.

The agents decide and publish; starting runs and moving registry aliases are done through these
ports, implemented by `triggers` (launchers) and the composition root (the MLflow registry).
This keeps faust-free policies pure and mlflow out of the agent layer, and lets a test hand the
agents a real launcher with a real registry without patching anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

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


class Registry(Protocol):
    """Blocking calls: the agents run them in a thread, never on the event loop."""

    def champion(self, model: str, alias: str) -> Champion: ...

    def set_champion(self, model: str, alias: str, version: str, history: Sequence[str],
                     event_key: str) -> None: ...

    def record_evaluation(self, model: str, version: str, passed: bool,
                          reasons: Sequence[str]) -> None: ...
