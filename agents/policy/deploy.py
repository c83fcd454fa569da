"""Deploy and rollback decisions over the champion history.

Why its own pure module: the deployer consumes promotion and operator events at least once,
possibly late and out of order. Whether to move the `champion` alias is decided here from
plain data (the version, the current champion, the versions that were champion) so that a
redelivered promotion is harmless, a stale one is refused, and a rollback is not silently
undone by an old promotion arriving after it.

Versions are MLflow registry versions ("1", "2", ...) and compare numerically.
The history lists versions that were champion, oldest first, the current one last, each
once (see `push_history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Deploy:
    version: str
    previous: str | None


@dataclass(frozen=True)
class Refuse:
    reason: str


def decide_deploy(version: str, champion: str | None, history: Sequence[str],
                  force: bool = False) -> Deploy | Refuse:
    """Should a promoted `version` become champion?

    `force` is for an operator's explicit promote: it may move the alias to any version.
    """
    number = _number(version)
    if number is None:
        return Refuse(f"not a model version: {version!r}")
    if champion is None:
        return Deploy(version, previous=None)
    current = _number(champion)
    if current is None:
        return Refuse(f"current champion {champion!r} is not a model version; fix the alias first")
    if number == current:
        # Redelivered promotion: re-publishing the same alias is harmless.
        return Deploy(version, previous=_last_other(history, version))
    if force:
        return Deploy(version, previous=champion)
    if number < current:
        return Refuse(f"stale promotion: v{version} is older than champion v{champion}")
    if any(_number(v) == number for v in history):
        # A newer version that was champion before means someone rolled back from it; a late
        # or redelivered promotion must not undo that rollback.
        return Refuse(f"v{version} was rolled back from (champion is v{champion}); "
                      "promote it explicitly to deploy it again")
    return Deploy(version, previous=champion)


def decide_rollback(champion: str | None, history: Sequence[str],
                    to: str | None = None) -> Deploy | Refuse:
    """Where does a rollback go?

    Without `to`: the most recent earlier champion that was not itself rolled back from.
    A version was rolled back from when a smaller version became champion after it, so
    walking the history backwards the target is the first version smaller than the current
    champion (everything passed on the way is newer, hence abandoned). Repeated rollbacks walk further back (3 -> 2 -> 1) instead of bouncing
    between 3 and 2, and after [1, 2, 3] -> rollback -> promote 4 a rollback goes to 2, not 3.
    A rollback without `to` is relative, hence not idempotent: dedupe its event, or resolve
    the target once and publish it.
    With `to`: it must have been champion; rolling back to the current champion is a no-op
    Deploy (a redelivered rollback is harmless).
    """
    current = champion if champion is not None else (history[-1] if history else None)
    number = _number(current)
    if number is None:
        return Refuse(f"no usable champion to roll back from ({current!r})")
    if to is not None:
        return _rollback_to(current, history, to)
    for v in reversed(history):
        n = _number(v)
        if n is not None and n < number:
            return Deploy(v, previous=current)
    return Refuse(f"no previous champion to roll back to (champion v{current})")


def push_history(history: Sequence[str], version: str, limit: int = 20) -> tuple[str, ...]:
    """Append `version` (moving it to the end if present), keeping the newest `limit`."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    kept = tuple(v for v in history if v != version) + (version,)
    return kept[-limit:]


def _rollback_to(current: str, history: Sequence[str], to: str) -> Deploy | Refuse:
    target = _number(to)
    if target is None:
        return Refuse(f"not a model version: {to!r}")
    if not any(_number(v) == target for v in history):
        known = ", ".join(f"v{v}" for v in history) or "none"
        return Refuse(f"v{to} was never champion (history: {known}); cannot roll back to it")
    if target == _number(current):
        return Deploy(to, previous=_last_other(history, to))
    return Deploy(to, previous=current)


def _last_other(history: Sequence[str], version: str) -> str | None:
    """The most recent history entry that is not `version` (history[-2] when it is current)."""
    number = _number(version)
    for v in reversed(history):
        if _number(v) != number:
            return v
    return None


def _number(version: str | None) -> int | None:
    """An MLflow version as an int; None for anything else ("v3", "", "1.0", unicode digits)."""
    if not isinstance(version, str) or not version.isascii() or not version.isdigit():
        return None
    return int(version)
