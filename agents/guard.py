"""The metric guard: closed metric windows and deployments → retrain signal or rollback request.

Part of the trigger agent (it reads the same partition of the same models), with its own
changelogged table of `GuardState` per model: which version is champion and since when, which
was before it, and each version's online score. The decision is the pure `decide_on_metric`:

    window within its floor                       → nothing
    under the floor                               → `MetricDegraded` signal for the retrain
                                                    reducer (reason "metric": cooldown, pause and
                                                    in-flight coalescing apply as for drift)
    under the floor, champion deployed within the
    guard period, previous champion scored better → `RollbackRequested` to the deployer, once
                                                    per champion version

The rollback request names both versions; the deployer refuses it if the champion moved in the
meantime, so a late request can never undo a newer deployment. Guard state is stored after the
rollback request is acknowledged; a crash between storing it and the trigger's own publish of a
metric-caused training request loses that one request (the next bad window asks again).

Every window of the model's metric is a decision on the record (`Context.record`, policy
"metric"): fine, retrain, rollback, or skipped / suppressed / duplicate with the policy's reason.
"""

from __future__ import annotations

import logging
import time

from agents import policies as p
from agents.context import Context
from streams import events as ev
from streams.codec import Decoded

log = logging.getLogger("loopline.guard")


def guard_table(group: str) -> str:
    return f"{group}-metric-guard"


class MetricGuard:
    HANDLES = (ev.MetricReported, ev.DeploymentDone, ev.DeploymentRolledBack)

    def __init__(self, ctx: Context, table):
        self.ctx, self.table = ctx, table

    def state(self, model: str) -> p.GuardState:
        raw = self.table.get(model)
        return p.GuardState.from_dict(raw) if raw else p.GuardState()

    async def handle(self, d: Decoded, model) -> p.MetricDegraded | None:
        """Update the guard; returns a retrain signal for the trigger's reducer, or None."""
        event, data = d.event, d.data
        state = self.state(model.name)
        signal = None
        if isinstance(data, ev.DeploymentDone):
            new = p.on_deployment(state, data.version, data.previous_version, event.timestamp)
        elif isinstance(data, ev.DeploymentRolledBack):
            new = p.on_deployment(state, data.version, data.from_version, event.timestamp,
                                  rolled_back=True)
        else:
            policy = getattr(model, "metrics", None)
            if policy is None or data.metric != policy.metric or data.model_version is None:
                return None
            window = p.Window(event.key, data.model_version, data.window_start or 0.0,
                              data.window_end or 0.0, data.count, data.value)
            new, decision = p.decide_on_metric(window, state, policy, time.time())
            if isinstance(decision, p.Rollback):
                await self.ctx.publish(ev.RollbackRequested(
                    version=decision.to, from_version=decision.from_version,
                    reason=decision.reason), model.name, event)
                outcome, reason = "rollback", f"rollback to v{decision.to} requested: {decision.reason}"
            elif isinstance(decision, p.Retrain):
                signal = p.MetricDegraded(event.key, decision.detail)
                outcome, reason = "retrain", decision.detail
            else:
                outcome, reason = _skipped(decision.reason, state, new), decision.reason
            self.ctx.metrics.decision("metric", outcome)
            log.info("%s: %s", model.name, reason)
            await self.ctx.record("metric", outcome, reason, model.name, event)
        if new != state:
            self.table[model.name] = new.to_dict()
        return signal


def _skipped(reason: str, before: p.GuardState, after: p.GuardState) -> str:
    """The outcome of a window that asks for nothing: fine (within its bar), suppressed (a
    rollback already asked for), duplicate, or skipped (too few predictions, not the champion)."""
    if after.suppressed > before.suppressed:
        return "suppressed"
    if reason.startswith("duplicate"):
        return "duplicate"
    return "fine" if "within the floor" in reason else "skipped"
