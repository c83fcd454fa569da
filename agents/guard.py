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
                self.ctx.metrics.decision("metric", "rollback")
                log.info("%s: rollback to v%s requested: %s", model.name, decision.to, decision.reason)
            elif isinstance(decision, p.Retrain):
                signal = p.MetricDegraded(event.key, decision.detail)
                self.ctx.metrics.decision("metric", "retrain")
                log.info("%s: %s", model.name, decision.detail)
            else:
                self.ctx.metrics.decision("metric", "suppressed" if new.suppressed > state.suppressed
                                          else "skipped")
                log.info("%s: %s", model.name, decision.reason)
        if new != state:
            self.table[model.name] = new.to_dict()
        return signal
