"""A cluster launcher's whole life against a fresh fake API server: what it asks of the API.

The Helm chart's Role must grant every request the launchers make. Rather than a table
copied from the chart, `permissions_used(kind)` drives one launcher through everything a
worker does with it (taking the run watcher's Lease, submit, a redelivered submit, watch,
a failed and a succeeded run reported by the real Trainer, acknowledgement, renewing the
Lease, another worker's look-up of a run, releasing the Lease at shutdown) and returns the
(API group, resource, verb) of each request the fake server saw. It starts its own server,
so the Role test needs no other test to have run.
"""

from __future__ import annotations

import asyncio

from agents.metrics import Metrics
from agents.trainer import Trainer
from streams import events as ev
from tests.k8s.conftest import NAMESPACE, OWNER, FakeClock, launch_spec, pod_settings, wait_for
from tests.k8s.controllers import complete, failed, job_pod, node, wf_status, workflow_pod
from tests.k8s.fake_kube import JOBS, LEASES, WORKFLOWS, FakeKube
from triggers.cluster import ArgoWorkflowLauncher, ClusterLauncher, KubernetesJobLauncher
from triggers.kube import KubeClient
from triggers.lease import Lease, lease_name
from triggers.pipeline import FAILED, SUCCEEDED, LaunchSpec
from triggers.podspec import ANN_REPORTED


class TrainerContext:
    """The trainer's view of the world: launchers and a bus that records what is published."""

    def __init__(self, launchers):
        self.launchers = launchers
        self.models = {}
        self.metrics = Metrics()
        self.published = []

    async def publish(self, data, model, cause):
        self.published.append((data, model, cause))


def _finish_jobs(fake: FakeKube, ok: LaunchSpec, bad: LaunchSpec) -> None:
    job_pod(fake, ok.run_name, {"phase": SUCCEEDED, "outputs": {"evaluate": {"candidate_version": "3"}}})
    job_pod(fake, bad.run_name, {"phase": FAILED, "reason": "step train exited with code 3"}, log="boom")
    fake.set_status(JOBS, NAMESPACE, ok.run_name, complete())
    fake.set_status(JOBS, NAMESPACE, bad.run_name, failed())


def _finish_workflows(fake: FakeKube, ok: LaunchSpec, bad: LaunchSpec) -> None:
    crashed = node(bad.run_name, "train", "Failed", message="Error (exit code 3)")
    workflow_pod(fake, bad.run_name, crashed, log="boom")
    fake.set_status(WORKFLOWS, NAMESPACE, ok.run_name, wf_status(ok.run_name, "Succeeded", [
        node(ok.run_name, "evaluate", "Succeeded", {"candidate_version": "3"})]))
    fake.set_status(WORKFLOWS, NAMESPACE, bad.run_name, wf_status(bad.run_name, "Failed", [crashed]))


LAUNCHERS = {"kubernetes": (KubernetesJobLauncher, JOBS, _finish_jobs),
             "argo": (ArgoWorkflowLauncher, WORKFLOWS, _finish_workflows)}


def permissions_used(kind: str) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every request the `kind` launcher made in its whole life."""
    cls, resource, finish = LAUNCHERS[kind]
    fake = FakeKube().start()
    client = KubeClient.for_host(fake.url)
    clock = FakeClock()
    lease = Lease(client, NAMESPACE, lease_name(OWNER), "worker-0", clock=clock)
    launchers: list[ClusterLauncher] = []

    def worker(lease: Lease | None = None) -> ClusterLauncher:
        launchers.append(cls(client, {"classifier": pod_settings()}, OWNER, watch_timeout=5, lease=lease))
        return launchers[-1]

    try:
        runs, ok, bad = worker(lease), launch_spec(), launch_spec()
        assert runs.submit(ok) and runs.submit(bad) and not runs.submit(ok)  # the last: a redelivery
        assert runs.wait_synced()
        finish(fake, ok, bad)
        ctx = TrainerContext({kind: runs})
        trainer = Trainer(ctx, {})
        wait_for(lambda: asyncio.run(trainer.watch()) or len(ctx.published) == 2)
        reported = {type(data): data for data, _, _ in ctx.published}
        assert reported[ev.TrainingFailed].log_tail == ["boom"]  # the failed pod's log was read
        assert reported[ev.TrainingSucceeded].run_name == ok.run_name
        assert all(ANN_REPORTED in o["metadata"]["annotations"] for o in fake.list(resource, NAMESPACE))
        clock.advance(lease.renew_every)
        assert runs.poll() == [] and lease.leads()  # renewed
        later = launch_spec()
        runs.submit(later)
        assert worker().spec(later.run_name) == later  # a worker that has not watched reads the object
        lease.release()  # shutdown
        assert fake.get(LEASES, NAMESPACE, lease.name)["spec"]["holderIdentity"] == ""
    finally:
        for launcher in launchers:
            launcher.close()
        client.close()
        fake.stop()
    return fake.permissions_used()
