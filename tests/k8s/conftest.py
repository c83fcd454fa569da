"""Fixtures for the cluster launchers: a fake API server over HTTP, a real client, requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from streams import events as ev
from streams.codec import build
from triggers.kube import KubeClient
from triggers.naming import run_name
from triggers.pipeline import LaunchSpec, Pipeline, Step
from triggers.podspec import PodSettings

from tests.k8s.fake_kube import FakeKube
from tests.waiting import wait_until

NAMESPACE = "ml"
OWNER = "loopline-worker"
# Every shell metacharacter we could think of, plus Argo's template braces.
NASTY = "x'; rm -rf / #\" $(touch /tmp/pwned) `id` | & > < * ? ~ \\ {{workflow.name}} {{steps.a.outputs.b}} \n ü"


@pytest.fixture
def fake():
    server = FakeKube().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    kube = KubeClient.for_host(fake.url)
    kube.timeout = 5.0
    yield kube
    kube.close()


def pipeline() -> Pipeline:
    return Pipeline((
        Step("prepare", ("python", "-m", "examples.classifier.prepare"), timeout_seconds=120),
        Step("train", ("python", "-m", "examples.classifier.train", "--rows", "{{steps.prepare.outputs.rows}}"),
             depends=("prepare",), env={"EPOCHS": "3"}, timeout_seconds=600),
        Step("evaluate", ("python", "-m", "examples.classifier.evaluate"), depends=("train",)),
        Step("publish", ("python", "-c", "print('publish')"), depends=("evaluate",),
             when="evaluate.accuracy >= 0.9"),
    ))


def pod_settings(**overrides) -> PodSettings:
    base = dict(
        namespace=NAMESPACE, image="ghcr.io/example/loopline:1.0", image_pull_policy="IfNotPresent",
        image_pull_secrets=("regcred",), service_account="loopline-runs",
        requests={"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        limits={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        backoff_limit=2, active_deadline_seconds=3600, ttl_seconds_after_finished=86400,
        env_from_secrets=("mlflow-credentials",), workdir="/app",
        labels={"team": "ml"}, annotations={"example.com/owner": "ml-team"})
    base.update(overrides)
    return PodSettings(**base)


def launch_spec(model: str = "classifier", reason: str = "data arrived", key: str | None = None,
                steps: Pipeline | None = None) -> LaunchSpec:
    """A spec as agents.trainer builds it, with the TrainingRequested CloudEvent as LOOPLINE_REQUEST."""
    key = key or f"loopline/test#{time.time_ns()}"
    event = build(ev.TrainingRequested(idempotency_key=key, reason=reason, causes=[key],
                                       data_uris=["s3://bucket/batch-1.parquet"]), model, source="loopline/test")
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "LOOPLINE_STATE_DIR": "/worker/state",
           "LOOPLINE_MODEL": model, "LOOPLINE_IDEMPOTENCY_KEY": key,
           "LOOPLINE_CORRELATION_ID": event.correlationid, "LOOPLINE_CAUSATION_ID": event.id,
           "LOOPLINE_PARAM_REASON": reason, "LOOPLINE_REQUEST": event.to_json().decode()}
    return LaunchSpec(run_name=run_name(model, key), model=model, pipeline=steps or pipeline(), env=env,
                      workdir="/worker/repo")


def request_key(spec: LaunchSpec) -> str:
    return json.loads(spec.env["LOOPLINE_REQUEST"])["data"]["idempotency_key"]


def phases(statuses) -> dict[str, str]:
    return {s.run_name: s.phase for s in statuses}


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    return wait_until(predicate, timeout, interval=interval)


class FakeClock:
    """Monotonic seconds that move only when a test moves them (a Lease's injectable clock)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
