"""Crash points: where the fault-injection tests SIGKILL the worker, by name.

`LOOPLINE_CRASH_AT=trainer.submitted` makes the worker kill itself (SIGKILL: no cleanup, no
flush, exactly what an OOM kill or a lost node looks like) the first time it reaches that
point. The points sit between a side effect and the acknowledgement that follows it — the
moments at-least-once delivery has to survive. Unset, a crash point is one comparison.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LOOPLINE_CRASH_AT"
POINTS = (
    "trigger.outbox-flushed",     # request stored with its state, changelog flushed; not yet published
    "trigger.request-published",  # request published; the outbox not yet emptied, offset not committed
    "trainer.submitted",          # the run was launched; TrainingStarted not yet published, offset not committed
    "evaluator.evaluated",        # ModelEvaluated published; ModelPromoted not yet
    "deployer.alias-moved",       # the champion alias moved; the deployment event not yet published
)
_target = os.environ.get(CRASH_ENV) or None
if _target is not None and _target not in POINTS:
    raise ValueError(f"{CRASH_ENV}={_target!r} is not a crash point; expected one of {POINTS}")


def crash_point(name: str) -> None:
    if name == _target:
        os.kill(os.getpid(), signal.SIGKILL)
