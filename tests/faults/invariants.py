"""What "nothing lost, nothing doubled" means, read from the topics and the run directories."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from devstack.observe import Observer
from streams import events as ev


def requests_by_key(observer: Observer) -> dict[str, set[str]]:
    """idempotency key -> the event keys (`source#id`) it was caused by. A redelivered trigger
    may publish the same request twice; it has the same key, so it counts once."""
    causes: dict[str, set[str]] = defaultdict(set)
    for d in observer.of_type(ev.TrainingRequested.TYPE):
        causes[d.data.idempotency_key].update(d.data.causes)
    return causes


def unrequested(observer: Observer, event_keys: set[str]) -> set[str]:
    covered = set().union(*requests_by_key(observer).values()) if requests_by_key(observer) else set()
    return event_keys - covered


def unstarted(observer: Observer) -> set[str]:
    """Requested idempotency keys the trainer has not answered with a TrainingStarted yet (a
    request made just before a rebalance waits for the new owner of its partition)."""
    started = {d.data.idempotency_key for d in observer.of_type(ev.TrainingStarted.TYPE)}
    return set(requests_by_key(observer)) - started


def launches(observer: Observer) -> dict[str, list[bool]]:
    """idempotency key -> `created` of each TrainingStarted for it, in order: True when that
    request launched a run, False when the run existed already (a request delivered again)."""
    created: dict[str, list[bool]] = defaultdict(list)
    for d in observer.of_type(ev.TrainingStarted.TYPE):
        created[d.data.idempotency_key].append(d.data.created)
    return created


def assert_nothing_lost_nothing_doubled(observer: Observer, event_keys: set[str], runs_dir: Path) -> None:
    by_key = requests_by_key(observer)
    assert not unrequested(observer, event_keys), "an input event never led to a training request"
    owners: dict[str, list[str]] = defaultdict(list)
    for key, causes in by_key.items():
        for cause in causes & event_keys:
            owners[cause].append(key)
    doubled = {cause: keys for cause, keys in owners.items() if len(keys) > 1}
    assert not doubled, f"input events that caused two different trainings: {doubled}"
    created = launches(observer)
    assert all(sum(flags) <= 1 for flags in created.values()), f"a key launched twice: {dict(created)}"
    runs = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.exists() else []
    assert len(runs) == len(by_key), f"{len(runs)} runs for {len(by_key)} idempotency keys"
