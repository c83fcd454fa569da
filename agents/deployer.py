"""The deployer agent: promotions and operator promote/rollback → the registry alias moves.

The alias is the deployment: serving loads `models:/NAME@champion` and reloads on the
Deployment events published here. Where the alias goes is decided by the pure deploy policies
(stale promotions refused, a rollback not undone by a late promotion); the registry remembers
which event moved it last, so a redelivered rollback (a relative move) is announced again but
never applied twice. Operator commands arrive from `operator.verified`, after the operator gate
(`agents.operator`) checked their signature, expiry and replay. Each deployment's event id is
appended to the version's `loopline.lineage.deployment_event_ids` tag.
"""

from __future__ import annotations

import asyncio
import logging

from agents import policies as p
from agents.context import Context
from agents.faults import crash_point
from agents.edge import PermanentError
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent

log = logging.getLogger("loopline.deployer")


class Deployer:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def handle(self, d: Decoded) -> None:
        event, data = d.event, d.data
        if isinstance(data, ev.ModelPromoted):
            await self.deploy(event, data.version, "promotion")
        elif isinstance(data, ev.OperatorCommand) and data.command == "promote":
            if not data.version:
                raise PermanentError("operator promote needs a version")
            await self.deploy(event, data.version, f"manual promote: {data.reason}", force=True)
        elif isinstance(data, ev.OperatorCommand) and data.command == "rollback":
            await self.deploy(event, data.version, f"manual rollback: {data.reason}", rollback=True)
        elif isinstance(data, ev.RollbackRequested):
            # A policy's rollback (agents.guard): only away from the champion it judged.
            await self.deploy(event, data.version, f"metric rollback: {data.reason}", rollback=True,
                              expect=data.from_version)

    async def deploy(self, event: CloudEvent, version: str | None, reason: str, *,
                     force: bool = False, rollback: bool = False, expect: str | None = None) -> None:
        model = self.ctx.model(event)
        registry = self.ctx.registry
        now = await asyncio.to_thread(registry.champion, model.name, model.alias)
        replayed = now.last_event == event.key
        if replayed:
            decision: p.Deploy | p.Refuse = p.Deploy(now.version, _before(now.history, now.version))
        elif expect is not None and now.version != expect:
            decision = p.Refuse(f"rollback from v{expect} refused: the champion is now "
                                f"v{now.version}")
        elif rollback:
            decision = p.decide_rollback(now.version, now.history, version)
        else:
            decision = p.decide_deploy(version, now.version, now.history, force=force)
        if isinstance(decision, p.Refuse):
            out: ev.EventData = ev.DeploymentRefused(version=version, reason=decision.reason)
        else:
            if not replayed:
                await asyncio.to_thread(registry.set_champion, model.name, model.alias, decision.version,
                                        p.push_history(now.history, decision.version), event.key)
                crash_point("deployer.alias-moved")
            if rollback:
                out = ev.DeploymentRolledBack(version=decision.version, from_version=decision.previous,
                                              alias=model.alias, reason=reason)
            else:
                out = ev.DeploymentDone(version=decision.version, previous_version=decision.previous,
                                        alias=model.alias, reason=reason)
        published = await self.ctx.publish(out, model.name, event)
        metrics = self.ctx.metrics
        if isinstance(decision, p.Refuse):
            metrics.decision("deploy", "refused")
        else:
            metrics.decision("deploy", "rolled_back" if rollback else "deployed")
            await self.ctx.record_lineage(model.name, decision.version, {},
                                          append={"deployment_event_ids": published.id})
            if event.type == ev.ModelPromoted.TYPE and not replayed:
                metrics.observe_deployment(event.correlationid)
        log.info("%s: %s", model.name, out)


def _before(history, version) -> str | None:
    """The champion before `version` in the alias history."""
    items = list(history)
    if version in items and items.index(version) > 0:
        return items[items.index(version) - 1]
    return None
