"""Wait for a condition instead of sleeping and hoping.

A test that sleeps "long enough" is slow when the machine is fast and flaky when it is
loaded; one that polls a predicate returns as soon as the condition holds and fails with
what it was waiting for. (Events on the bus: `Observer.wait_for`, which wakes on arrival.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> T:
    """The predicate's first truthy value, polled every `interval`; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_terminal(launcher, name: str, timeout: float = 15.0, interval: float = 0.02):
    """A launcher's run `name` once it is terminal; the error shows its runner's log when there is one."""
    def terminal():
        status = launcher.status(name)
        return status if status is not None and status.terminal else None

    try:
        return wait_until(terminal, timeout, f"run {name} to finish", interval)
    except AssertionError as exc:
        log = getattr(launcher, "runs_dir", None)
        log = log / name / "runner.log" if log is not None else None
        raise AssertionError(f"{exc}: {log.read_text()}" if log is not None and log.exists() else str(exc)) from None
