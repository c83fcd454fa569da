"""The run watcher's leader election (triggers.lease) and acknowledgement, two workers, one fake API server.

Each worker has its own API client, Lease identity and clock; the clocks move only when a test
moves them, so a lease duration passes without waiting for it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from agents.trainer import Trainer
from tests.k8s.conftest import NAMESPACE, OWNER, FakeClock, launch_spec, pod_settings, wait_for
from tests.k8s.controllers import complete, failed
from tests.k8s.fake_kube import JOBS, LEASES
from tests.k8s.lifecycle import TrainerContext
from triggers.cluster import KubernetesJobLauncher
from triggers.kube import JOBS as JOB_RESOURCE
from triggers.kube import ApiError, KubeClient
from triggers.lease import Lease, lease_name
from triggers.podspec import ANN_REPORTED

DURATION = 15
NAME = lease_name(OWNER)


@dataclass
class Worker:
    """One worker's run watcher: its launcher (with a Lease) and the trainer that reports."""

    runs: KubernetesJobLauncher
    clock: FakeClock
    ctx: TrainerContext = field(init=False)

    def __post_init__(self):
        self.ctx = TrainerContext({"kubernetes": self.runs})
        self.trainer = Trainer(self.ctx, {})

    @property
    def lease(self) -> Lease:
        return self.runs.lease

    def watch(self) -> list[str]:
        """One run-watcher tick; the run names this worker has reported so far."""
        asyncio.run(self.trainer.watch())
        return [data.run_name for data, _, _ in self.ctx.published]


@pytest.fixture
def worker(fake):
    made = []

    def make(identity: str) -> Worker:
        client = KubeClient.for_host(fake.url)
        client.timeout = 5.0
        clock = FakeClock()
        lease = Lease(client, NAMESPACE, NAME, identity, DURATION, clock)
        made.append((KubernetesJobLauncher(client, {"classifier": pod_settings()}, OWNER, watch_timeout=5,
                                           lease=lease), client))
        return Worker(made[-1][0], clock)

    yield make
    for runs, client in made:
        runs.close()
        client.close()


def holder(fake) -> tuple[str, int]:
    spec = fake.get(LEASES, NAMESPACE, NAME)["spec"]
    return spec.get("holderIdentity", ""), spec.get("leaseTransitions", 0)


def terminal(runs, name: str) -> bool:
    status = runs.status(name)
    return status is not None and status.terminal


def reported(fake, name: str) -> bool:
    return ANN_REPORTED in (fake.get(JOBS, NAMESPACE, name)["metadata"].get("annotations") or {})


def test_of_two_workers_one_leads_and_only_it_reports(fake, worker):
    a, b = worker("a"), worker("b")
    spec = launch_spec()
    a.runs.submit(spec)
    assert a.watch() == [] and b.watch() == []  # a asked first: a leads
    fake.set_status(JOBS, NAMESPACE, spec.run_name, failed())
    wait_for(lambda: terminal(b.runs, spec.run_name))
    assert b.watch() == [] and not b.runs.leads()  # b knows the run is over, and leaves it to a
    assert wait_for(lambda: a.watch()) == [spec.run_name]
    assert holder(fake) == ("a", 0)
    lease = fake.get(LEASES, NAMESPACE, NAME)["spec"]
    assert lease["leaseDurationSeconds"] == DURATION
    assert datetime.fromisoformat(lease["renewTime"]).tzinfo is not None  # a MicroTime, for kubectl


def test_a_leader_that_renews_keeps_the_lease(fake, worker):
    a, b = worker("a"), worker("b")
    renewals = fake.count("PUT", "/leases/")
    for _ in range(6):  # twice the lease duration
        assert a.lease.held() and not b.lease.held()
        a.clock.advance(a.lease.renew_every)
        b.clock.advance(a.lease.renew_every)
    assert holder(fake) == ("a", 0)
    assert fake.count("PUT", "/leases/") - renewals == 5  # every duration/3, after the first create


def test_when_the_leader_stops_renewing_the_other_takes_over_within_the_lease_duration(fake, worker):
    a, b = worker("a"), worker("b")
    first, second = launch_spec(), launch_spec()
    a.runs.submit(first)
    a.runs.submit(second)
    fake.set_status(JOBS, NAMESPACE, first.run_name, failed())
    assert wait_for(lambda: a.watch()) == [first.run_name]
    assert b.watch() == []  # b sees a's record now: its lease duration starts on b's clock
    fake.set_status(JOBS, NAMESPACE, second.run_name, complete())
    wait_for(lambda: terminal(b.runs, second.run_name))
    # a stops renewing (hung, or cut off from the API server): nobody polls it any more
    b.clock.advance(DURATION - 0.5)
    assert b.watch() == [] and not b.runs.leads()
    b.clock.advance(0.5)  # the lease duration since a's last renewal, as b saw it
    assert b.watch() == [second.run_name]  # the run a had not reported; not the one it had
    assert holder(fake) == ("b", 1) and reported(fake, first.run_name) and reported(fake, second.run_name)
    a.clock.advance(a.lease.renew_deadline)
    assert not a.runs.leads()
    assert a.watch() == [first.run_name] and holder(fake) == ("b", 1)  # a reports nothing more


def test_a_leader_stops_acting_before_anyone_else_may_take_over(fake, worker):
    a, b = worker("a"), worker("b")
    assert a.lease.held() and not b.lease.held()
    a.clock.advance(a.lease.renew_deadline)  # no renewal since
    b.clock.advance(a.lease.renew_deadline)
    assert not a.runs.leads()
    assert not b.lease.held()  # for the last third of the duration nobody leads: never two at once
    b.clock.advance(DURATION - a.lease.renew_deadline)
    assert b.lease.held()


def test_a_leader_whose_lease_runs_out_mid_batch_stops_reporting(fake, worker):
    a, b = worker("a"), worker("b")
    specs = [launch_spec(), launch_spec()]
    for spec in specs:
        a.runs.submit(spec)
        fake.set_status(JOBS, NAMESPACE, spec.run_name, failed())
    assert a.runs.wait_synced()
    wait_for(lambda: all(terminal(a.runs, s.run_name) for s in specs))
    publish = a.ctx.publish

    async def slow_publish(data, model, cause):  # the first report outlasts the renew deadline
        await publish(data, model, cause)
        a.clock.advance(a.lease.renew_deadline)

    a.ctx.publish = slow_publish
    (done,) = a.watch()
    (rest,) = {s.run_name for s in specs} - {done}
    assert reported(fake, done) and not reported(fake, rest)
    assert b.watch() == []
    b.clock.advance(DURATION)
    assert wait_for(lambda: b.watch()) == [rest]


def test_a_stale_resource_version_gets_409_and_that_candidate_does_not_lead(fake, worker):
    a, b, c = worker("a"), worker("b"), worker("c")
    assert c.lease.held()
    c.lease.release()  # a free Lease: whoever writes first takes it
    assert holder(fake) == ("", 0)
    a_won = []
    # b reads the free Lease; before b's update arrives, a reads it too and writes first.
    fake.before_next("update", "leases", lambda: a_won.append(a.lease.held()))
    assert b.lease.held() is False
    assert a_won == [True] and a.lease.leads() and not b.lease.leads()
    assert holder(fake) == ("a", 1)
    # b's update arrived before a's requests (and was served after them): b did write, and lost
    assert [r.verb for r in fake.requests if r.resource == "leases"][-4:] == ["get", "update", "get", "update"]


def test_a_released_lease_is_taken_over_at_once(fake, worker):
    a, b = worker("a"), worker("b")
    assert a.lease.held() and not b.lease.held()
    a.lease.release()  # shutdown
    assert not a.lease.leads()
    spec = fake.get(LEASES, NAMESPACE, NAME)["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    b.clock.advance(b.lease.retry_every)  # b's next attempt, long before the lease duration
    assert b.lease.held() and holder(fake) == ("b", 1)
    a.lease.release()  # released already: no request
    assert holder(fake) == ("b", 1)


def test_a_restarted_worker_reports_nothing_twice(fake, worker):
    a = worker("a")
    spec = launch_spec()
    a.runs.submit(spec)
    fake.set_status(JOBS, NAMESPACE, spec.run_name, failed())
    assert wait_for(lambda: a.watch()) == [spec.run_name]
    a.lease.release()
    a.runs.close()
    restarted = worker("a-restarted")
    assert restarted.runs.wait_synced()
    assert restarted.watch() == [] and restarted.runs.leads()
    assert reported(fake, spec.run_name)  # the Job is still there, annotated


def test_the_fake_api_server_guards_leases_and_patches_as_the_api_server_does(fake, client):
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
            "spec": {"holderIdentity": "x", "leaseDurationSeconds": 15}}
    created = client.create_lease(NAMESPACE, body)
    assert created is not None and client.create_lease(NAMESPACE, body) is None  # 409 AlreadyExists
    renewed = client.replace_lease(NAMESPACE, {**created, "spec": {"holderIdentity": "y"}})
    assert renewed["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert client.replace_lease(NAMESPACE, created) is None  # stale resourceVersion: 409 Conflict
    with pytest.raises(ApiError) as unconditional:
        client.replace_lease(NAMESPACE, {**body, "metadata": {"name": "l"}})
    with pytest.raises(ApiError) as invalid:
        client.replace_lease(NAMESPACE, {**renewed, "spec": {"leaseDurationSeconds": 0}})
    assert unconditional.value.status == invalid.value.status == 422
    client.create(JOB_RESOURCE, NAMESPACE, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}})
    version = fake.get(JOBS, NAMESPACE, "j")["metadata"]["resourceVersion"]
    client.patch(JOB_RESOURCE, NAMESPACE, "j", {"metadata": {"annotations": {"a": "1"}}})
    with pytest.raises(ApiError) as stale:  # a resourceVersion in a patch is a precondition
        client.patch(JOB_RESOURCE, NAMESPACE, "j", {"metadata": {"resourceVersion": version, "labels": {"b": "2"}}})
    assert stale.value.status == 409 and "labels" not in fake.get(JOBS, NAMESPACE, "j")["metadata"]
    assert client.patch(JOB_RESOURCE, NAMESPACE, "gone", {"metadata": {}}) is None


def test_each_worker_group_has_its_own_valid_lease_name():
    names = [lease_name(group) for group in ("prod", "Prod", "ml_team.v2", "prod-" + "x" * 80)]
    assert names[0] == "prod-run-watcher" and len(set(names)) == 4
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 63 for n in names)
