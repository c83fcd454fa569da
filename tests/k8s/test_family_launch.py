"""A family configured once: its members' runs get the family's pod settings (triggers.per_model),
on the real kubernetes client against the fake API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline import config
from loopline.launchers import distributed_runs, pod_settings as configured_pods
from tests.k8s.conftest import NAMESPACE, OWNER, launch_spec, pod_settings
from tests.k8s.fake_kube import JOBS
from triggers.cluster import KubernetesJobLauncher
from triggers.per_model import PerModel


def test_a_member_reads_its_family_entry_and_a_plain_model_its_own():
    per = PerModel({"churn": "family", "churn.vip": "own", "fraud": "plain"})
    assert per["churn.acme"] == "family" and per["churn.vip"] == "own" and per["fraud"] == "plain"
    assert "churn.acme" in per and per.get("other") is None
    with pytest.raises(KeyError):
        per["nope.x"]
    assert sorted(per) == ["churn", "churn.vip", "fraud"]


def test_a_members_run_is_a_job_with_its_familys_pod_settings(fake, client):
    launcher = KubernetesJobLauncher(client, {"churn": pod_settings(image="churn:7")}, OWNER, watch_timeout=5)
    try:
        spec = launch_spec(model="churn.acme")
        assert launcher.submit(spec) is True
        (job,) = fake.list(JOBS, NAMESPACE)
        assert job["metadata"]["name"] == spec.run_name
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "churn:7"
    finally:
        launcher.close()


def test_the_worker_configures_a_family_once_before_any_member_exists(tmp_path):
    raw = {"families": [{
        "name": "churn", "pipeline": {"launcher": "kubernetes", "kubernetes": {
            "image": "churn:7", "distributed": {"workers": 2}},
            "steps": [{"name": "evaluate", "command": ["true"]}]}}]}
    catalog = config.parse(raw, Path(tmp_path) / "loopline.yaml")
    assert len(catalog) == 0                                 # no member yet
    configured = config.configured(catalog)
    assert list(configured) == ["churn"]
    assert configured_pods(configured["churn"], NAMESPACE, "").image == "churn:7"
    assert distributed_runs(configured, "kubernetes")["churn"].workers == 2
    catalog.get("churn.acme")
    assert list(config.configured(catalog)) == ["churn"]     # members do not add entries
