"""The trainer agent and the run watcher: requests become launched runs, runs become outcomes.

The agent only submits (a few milliseconds: the launcher starts the run and returns) and never
waits for the job. The run name is a pure function of the idempotency key, so a redelivered
request finds its run already there (`created=False`) and starts nothing. The watcher, on the
leader, turns terminal runs into TrainingSucceeded / TrainingFailed, caused by the request.
"""

from __future__ import annotations

import asyncio
import json
import logging

from agents.context import Context
from agents.edge import PermanentError
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, RunStatus

log = logging.getLogger("loopline.trainer")


class Trainer:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def launch_spec(self, event: CloudEvent, request: ev.TrainingRequested, model) -> LaunchSpec:
        env = {**self.ctx.opts.job_env,
               **{f"LOOPLINE_PARAM_{k.upper()}": v for k, v in model.params.items()},
               "LOOPLINE_MODEL": model.name, "LOOPLINE_IDEMPOTENCY_KEY": request.idempotency_key,
               "LOOPLINE_CORRELATION_ID": event.correlationid, "LOOPLINE_CAUSATION_ID": event.id,
               "LOOPLINE_REQUEST": event.to_json().decode()}
        return LaunchSpec(run_name=run_name(model.name, request.idempotency_key), model=model.name,
                          pipeline=model.pipeline, env=env, workdir=model.workdir)

    async def handle(self, d: Decoded) -> None:
        model = self.ctx.model(d.event)
        launcher = self.ctx.launchers.get(model.launcher)
        if launcher is None:
            raise PermanentError(f"launcher {model.launcher!r} is not configured in this worker")
        spec = self.launch_spec(d.event, d.data, model)
        created = await asyncio.to_thread(launcher.submit, spec)
        await self.ctx.publish(ev.TrainingStarted(
            idempotency_key=d.data.idempotency_key, run_name=spec.run_name,
            launcher=model.launcher, created=created), model.name, d.event)
        log.info("%s: run %s %s", model.name, spec.run_name, "launched" if created else "already exists")

    async def watch(self) -> None:
        for launcher in self.ctx.launchers.values():
            for status in await asyncio.to_thread(launcher.poll):
                if status.terminal:
                    spec = await asyncio.to_thread(launcher.spec, status.run_name)
                    await self.report(status, spec)
                    await asyncio.to_thread(launcher.mark_reported, status.run_name)

    async def report(self, status: RunStatus, spec: LaunchSpec | None) -> None:
        request = CloudEvent.from_dict(json.loads(spec.env["LOOPLINE_REQUEST"])) if spec else None
        key = request.data["idempotency_key"] if request else ""
        duration = (status.finished_at - status.started_at
                    if status.finished_at and status.started_at else None)
        if status.phase == "Succeeded":
            data: ev.EventData = ev.TrainingSucceeded(
                idempotency_key=key, run_name=status.run_name, duration_seconds=duration,
                outputs={step: dict(out) for step, out in status.outputs.items()})
        else:
            data = ev.TrainingFailed(idempotency_key=key, run_name=status.run_name,
                                     reason=status.reason or status.phase,
                                     log_tail=list(status.log_tail), duration_seconds=duration)
        await self.ctx.publish(data, status.model, request)
        if duration is not None:
            model = self.ctx.models.get(status.model)
            self.ctx.metrics.job_duration.labels(
                model.launcher if model else "unknown",
                "succeeded" if status.phase == "Succeeded" else "failed").observe(duration)
        log.info("%s: run %s %s", status.model, status.run_name, status.phase.lower())
