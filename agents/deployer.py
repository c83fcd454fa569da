"""The deployer agent: promotions, rollouts and operator promote/rollback → registry aliases move.

The alias is the deployment: serving loads `models:/NAME@champion` and reloads on the
Deployment events published here. Where the alias goes is decided by the pure deploy policies
(stale promotions refused, a rollback not undone by a late promotion); the registry remembers
which event moved it last, so a redelivered rollback (a relative move) is announced again but
never applied twice. Operator commands arrive from `operator.verified`, after the operator gate
(`agents.operator`) checked their signature, expiry and replay. Each deployment's event id is
appended to the version's `loopline.lineage.deployment_event_ids` tag.

Rollouts (a model whose `rollout.strategy` is not `direct`): a promotion does not move the
champion; it sets the `challenger` alias and starts an experiment (RolloutStarted), which the
experiment folder (`agents.experiments`) runs from online feedback. Its analyses come back here:
`promote` moves the champion to the winner and ends the rollout, `rollback` drops the
challengers (the champion never moved, so a rollback of a rollout is `DeploymentRolledBack` to
the same champion). An operator's promote ends a rollout the same way; an operator's rollback
during a rollout drops its challengers instead of moving the champion back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from agents import policies as p
from agents.context import Context
from agents.faults import crash_point
from agents.edge import PermanentError
from agents.policy.rollout import RolloutPolicy
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
            rollout: RolloutPolicy = getattr(self.ctx.model(event), "rollout", None) or RolloutPolicy()
            if rollout.strategy == "direct" or not await self.start_rollout(event, data, rollout):
                await self.deploy(event, data.version, "promotion")
        elif isinstance(data, ev.RolloutAnalysed) and data.action == "promote":
            await self.deploy(event, data.version, f"rollout {data.experiment} {data.verdict}: "
                              f"{data.reason}", expect=data.champion_version, end_rollout=True)
        elif isinstance(data, ev.RolloutAnalysed) and data.action == "rollback":
            await self.drop_challengers(event, f"rollout {data.experiment} {data.verdict}: {data.reason}")
        elif isinstance(data, ev.OperatorCommand) and data.command == "promote":
            if not data.version:
                raise PermanentError("operator promote needs a version")
            await self.deploy(event, data.version, f"manual promote: {data.reason}", force=True,
                              end_rollout=True)
        elif isinstance(data, ev.OperatorCommand) and data.command == "rollback":
            challengers = await asyncio.to_thread(self.ctx.registry.challengers, self.ctx.model(event).name)
            if challengers.versions or challengers.last_event == event.key:
                await self.drop_challengers(event, f"manual rollback: {data.reason}")
            else:
                await self.deploy(event, data.version, f"manual rollback: {data.reason}", rollback=True)
        elif isinstance(data, ev.RollbackRequested):
            # A policy's rollback (agents.guard): only away from the champion it judged.
            await self.deploy(event, data.version, f"metric rollback: {data.reason}", rollback=True,
                              expect=data.from_version)

    async def start_rollout(self, event: CloudEvent, data: ev.ModelPromoted, rollout: RolloutPolicy) -> bool:
        """The candidate becomes a challenger; a bandit keeps the challengers it already has.
        False when there is no champion to compare with (the first version deploys directly)."""
        model, registry = self.ctx.model(event), self.ctx.registry
        now = await asyncio.to_thread(registry.champion, model.name, model.alias)
        live = await asyncio.to_thread(registry.challengers, model.name)
        if now.version is None or (now.last_event == event.key and now.version == data.version):
            return False                # (or this promotion already deployed it directly)
        if live.last_event == event.key:             # a redelivery: announce the same rollout again
            versions = live.versions
        else:
            kept = live.versions if rollout.strategy == "bandit" else ()
            versions = tuple(v for v in kept if v not in (data.version, now.version)) + (data.version,)
            await asyncio.to_thread(registry.set_challengers, model.name, versions, event.key)
            crash_point("deployer.challenger-set")
        out = ev.RolloutStarted(experiment=experiment_id(model.name, data.version, event.key),
                                strategy=rollout.strategy, champion_version=now.version,
                                challenger_versions=list(versions),
                                reason=f"v{data.version} passed the gate; {rollout.strategy} rollout")
        await self.ctx.publish(out, model.name, event)
        self.ctx.metrics.decision("deploy", "rollout_started")
        log.info("%s: %s", model.name, out)
        return True

    async def drop_challengers(self, event: CloudEvent, reason: str) -> None:
        """A rollout ends without a new champion: its challengers leave, the champion stays."""
        model, registry = self.ctx.model(event), self.ctx.registry
        live = await asyncio.to_thread(registry.challengers, model.name)
        now = await asyncio.to_thread(registry.champion, model.name, model.alias)
        dropped = live.versions
        if live.last_event != event.key:
            await asyncio.to_thread(registry.set_challengers, model.name, (), event.key)
        out: ev.EventData
        if now.version is None:
            out = ev.DeploymentRefused(reason=f"no champion to keep: {reason}")
        else:
            out = ev.DeploymentRolledBack(version=now.version, from_version=",".join(dropped) or None,
                                          alias=model.alias, reason=reason)
        await self.ctx.publish(out, model.name, event)
        self.ctx.metrics.decision("deploy", "rolled_back")
        log.info("%s: %s", model.name, out)

    async def deploy(self, event: CloudEvent, version: str | None, reason: str, *,
                     force: bool = False, rollback: bool = False, expect: str | None = None,
                     end_rollout: bool = False) -> None:
        model = self.ctx.model(event)
        registry = self.ctx.registry
        now = await asyncio.to_thread(registry.champion, model.name, model.alias)
        replayed = now.last_event == event.key
        if replayed:
            decision: p.Deploy | p.Refuse = p.Deploy(now.version, _before(now.history, now.version))
        elif expect is not None and now.version != expect:
            decision = p.Refuse(f"{'rollback from' if rollback else 'promotion over'} v{expect} "
                                f"refused: the champion is now v{now.version}")
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
            if end_rollout:             # idempotent: a replay clears what is already clear
                live = await asyncio.to_thread(registry.challengers, model.name)
                if live.versions:
                    await asyncio.to_thread(registry.set_challengers, model.name, (), event.key)
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


def experiment_id(model: str, version: str, event_key: str) -> str:
    """One id per rollout, the same on redelivery: the model, the challenger and the promotion."""
    return f"{model}-v{version}-{hashlib.sha256(event_key.encode()).hexdigest()[:8]}"
