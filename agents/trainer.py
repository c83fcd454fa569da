"""The trainer agent and the run watcher: requests become launched runs, runs become outcomes.

The agent only submits (a few milliseconds: the launcher starts the run and returns) and never
waits for the job. Two guards keep a redelivered request from starting a second job: the run
name is a pure function of the idempotency key (the launcher refuses a name it has seen, the
409 path), and the keys launched per model are kept in a changelogged table, bounded — which
still holds after a cluster has deleted the finished Job. The watcher, on the leader, turns
terminal runs into TrainingSucceeded / TrainingFailed, caused by the request; a run that
succeeded without registering a model version is reported as failed, not as a success. A
cluster launcher is asked before each report whether this worker still holds its Lease, so a
worker that lost it mid-batch stops instead of reporting alongside the new leader.
"""

from __future__ import annotations

import asyncio
import json
import logging

from agents.context import Context
from agents.edge import PermanentError
from agents.faults import crash_point
from streams import events as ev
from streams.codec import Decoded
from streams.envelope import CloudEvent
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, RunStatus

log = logging.getLogger("loopline.trainer")


LAUNCHED_KEYS_KEPT = 1000      # per model; older keys fall back to the launcher's own 409 guard


class Trainer:
    def __init__(self, ctx: Context, launched_table):
        self.ctx, self.launched = ctx, launched_table

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
        key = d.data.idempotency_key
        launched = list(self.launched.get(model.name) or ())
        created = key not in launched and await asyncio.to_thread(launcher.submit, spec)
        crash_point("trainer.submitted")
        await self.ctx.publish(ev.TrainingStarted(
            idempotency_key=key, run_name=spec.run_name, launcher=model.launcher,
            created=created), model.name, d.event)
        if key not in launched:
            self.launched[model.name] = (launched + [key])[-LAUNCHED_KEYS_KEPT:]
        log.info("%s: run %s %s", model.name, spec.run_name, "launched" if created else "already exists")

    async def watch(self) -> None:
        for launcher in self.ctx.launchers.values():
            # Cluster launchers lead by a Lease that can run out mid-batch (no API call to ask);
            # the local one has no Lease: the Faust leader alone polls it.
            leads = getattr(launcher, "leads", None)
            for status in await asyncio.to_thread(launcher.poll):
                if status.terminal:
                    if leads is not None and not leads():
                        break  # whoever leads next reports the rest: they are unacknowledged
                    spec = await asyncio.to_thread(launcher.spec, status.run_name)
                    await self.report(status, spec)
                    await asyncio.to_thread(launcher.mark_reported, status.run_name)

    async def report(self, status: RunStatus, spec: LaunchSpec | None) -> None:
        request = CloudEvent.from_dict(json.loads(spec.env["LOOPLINE_REQUEST"])) if spec else None
        key = request.data["idempotency_key"] if request else ""
        duration = (status.finished_at - status.started_at
                    if status.finished_at and status.started_at else None)
        if status.phase == "Succeeded" and not _registered_a_version(status.outputs):
            data: ev.EventData = ev.TrainingFailed(
                idempotency_key=key, run_name=status.run_name, duration_seconds=duration,
                reason="the run exited 0 but registered no model version "
                       "(no step output named model_version or candidate_version)")
        elif status.phase == "Succeeded":
            data = ev.TrainingSucceeded(
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
        log.info("%s: run %s %s", status.model, status.run_name, data.TYPE.rsplit(".", 1)[-1])


def _registered_a_version(outputs) -> bool:
    return any(out.get("model_version") or out.get("candidate_version") for out in outputs.values())
