"""Two serving replicas as real processes: readiness, feedback anywhere, signed ids, A/B, shadow, restart.

Real parts: the broker (the session's), a real MLflow SQLite store holding two registered versions
of a tiny scikit-learn model logged here (v1 answers `a > 0`, v2 the opposite, so every answer
says which version made it), and two `loopline serve` processes sharing a state dir (so they
share the default signing key, as replicas share a mounted Secret). No worker: the test
publishes the `ExperimentUpdated` states the worker's experiment folder would, and reads what
the replicas publish back from the topics. One set of processes for the module (each start
costs seconds); every test publishes the state it needs and waits until both replicas show it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from devstack.observe import Observer
from devstack.stack import REPO, Process
from serving.routing import bucket
from streams import events as ev
from streams.admin import ensure_topics
from streams.broker import free_port
from streams.codec import build
from streams.publisher import Publisher
from streams.topics import Topics
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
MODEL, LATE = "clf", "late"
ROWS = [{"a": 1.5, "b": 0.2}, {"a": -0.7, "b": 1.0}, {"a": 0.3, "b": -2.0}]


# --- the real parts ----------------------------------------------------------------------------

class Registry:
    """A real MLflow store with tiny sklearn models, logged without requirement inference (fast)."""

    def __init__(self, root: Path):
        import mlflow

        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.experiment = mlflow.create_experiment("serving-replicas", artifact_location=(root / "art").as_uri())
        self.models: dict[tuple[str, str], object] = {}

    def register(self, name: str, flipped: bool) -> str:
        import mlflow
        import mlflow.sklearn
        import pandas as pd
        from mlflow.models import infer_signature
        from sklearn.linear_model import LogisticRegression

        frame = pd.DataFrame({"a": [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], "b": [0.1, -0.3, 0.2, 0.0, -0.1, 0.3]})
        labels = (frame.a < 0) if flipped else (frame.a > 0)
        model = LogisticRegression().fit(frame, labels.astype(int))
        with mlflow.start_run(experiment_id=self.experiment):
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                            signature=infer_signature(frame, model.predict(frame)),
                                            pip_requirements=["scikit-learn"])
        version = str(info.registered_model_version)
        self.models[(name, version)] = model
        return version

    def answers(self, name: str, version: str, rows: list[dict]) -> list:
        import pandas as pd

        return self.models[(name, version)].predict(pd.DataFrame(rows)).tolist()


class Replica:
    def __init__(self, name: str, root: Path, env: dict):
        self.port = free_port()
        self.process = Process(name, [sys.executable, "-m", "loopline.cli", "serve", "--port", str(self.port)],
                               env, root / f"{name}.log")

    def call(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        return status, (json.loads(raw) if raw.startswith((b"{", b"[")) else {"text": raw.decode()})

    def predict(self, rows=ROWS, unit: str | None = None, headers: dict | None = None) -> dict:
        extra = {**({"X-Loopline-Unit": unit} if unit else {}), **(headers or {})}
        status, answer = self.call("POST", f"/models/{MODEL}/predict", {"rows": rows}, extra)
        assert status == 200, answer
        return answer

    def models(self) -> dict:
        self.process.check()
        status, body = self.call("GET", "/models")
        assert status == 200
        return body

    def ready(self) -> bool:
        self.process.check()
        try:
            return self.call("GET", "/readyz")[0] == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def mlflow_env():
    """`mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI in os.environ, which every process
    started later in this test session would inherit: put it back afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        yield
    import mlflow

    mlflow.set_tracking_uri(None)  # the process-wide URIs too
    mlflow.set_registry_uri(None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)


@pytest.fixture(scope="module")
def world(tmp_path_factory, bootstrap, mlflow_env):
    root = tmp_path_factory.mktemp("serving-replicas")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    topics = Topics(prefix, 2)
    ensure_topics(bootstrap, topics)
    registry = Registry(root)
    for flipped in (False, True):
        registry.register(MODEL, flipped)
    from mlflow import MlflowClient

    MlflowClient(registry.uri, registry.uri).set_registered_model_alias(MODEL, "champion", "1")
    steps = [{"name": "evaluate", "command": ["true"]}]
    config = root / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": n, "pipeline": {"steps": steps}} for n in (MODEL, LATE)]}))
    env = {**os.environ, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_STATE_DIR": str(root / "state"),
           "LOOPLINE_CONFIG": str(config), "LOOPLINE_TOPIC_PREFIX": prefix, "LOOPLINE_PARTITIONS": "2",
           "LOOPLINE_MLFLOW_URI": registry.uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    observer = Observer(bootstrap, topics, roles=("feedback", "shadow", "predictions")).start()
    replicas = [Replica(name, root, env) for name in ("serving-a", "serving-b")]
    publisher = Publisher(bootstrap, topics)
    try:
        for replica in replicas:
            wait_until(replica.ready, 60, f"{replica.process.name} ready")
        yield {"replicas": replicas, "registry": registry, "observer": observer, "publisher": publisher,
               "topics": topics}
    finally:
        for replica in replicas:
            replica.process.stop()
        publisher.close()
        observer.stop()


def publish_experiment(world, strategy: str, arms: list[ev.ArmState], **fields) -> str:
    """An ExperimentUpdated as the worker would publish it; returns once both replicas route by it
    and have every arm loaded."""
    experiment = f"exp-{strategy}-{uuid.uuid4().hex[:6]}"
    now = time.time()
    state = ev.ExperimentUpdated(experiment=experiment, strategy=strategy, status="running", arms=arms,
                                 started_at=now, step_started_at=now, **fields)
    world["publisher"].publish(build(state, MODEL, source="tests/serving"))
    versions = {arm.version for arm in arms}

    def routed(replica: Replica) -> bool:
        seen = replica.models()[MODEL]
        return (seen["experiment"] or {}).get("experiment") == experiment and versions <= set(seen["loaded"])

    for replica in world["replicas"]:
        wait_until(lambda: routed(replica), 30, f"{replica.process.name} to route by {experiment}")
    return experiment


def arms(champion_weight: float = 0.5, **counts) -> list[ev.ArmState]:
    return [ev.ArmState(version="1", role="champion", weight=champion_weight, **counts.get("one", {})),
            ev.ArmState(version="2", role="challenger", weight=1 - champion_weight, **counts.get("two", {}))]


def feedback_of(observer: Observer, pids) -> list:
    wanted = set(pids)
    return [d for d in observer.of_type(ev.FeedbackReceived.TYPE, MODEL) if d.data.prediction_id in wanted]


# --- the tests ---------------------------------------------------------------------------------

def test_readyz_is_503_naming_what_is_missing_until_it_is_loaded(world):
    """A deployment names `late` v1 before the registry has it: both replicas say so (503, the
    version and why), stay alive, retry, and are ready once it is registered."""
    a, b = world["replicas"]
    world["publisher"].publish(build(ev.DeploymentDone(version="1"), LATE, source="tests/serving"))
    for replica in (a, b):
        # 503 from the start; the reason reads "loading" until the first load attempt has failed
        status, body = wait_until(lambda: (r := replica.call("GET", "/readyz"))[0] == 503 and any(
            m.startswith("late v1: load failed") for m in r[1]["missing"]) and r, 30,
            "503 naming late v1's failed load")
        assert f"{LATE}: no version of @champion loaded yet" in body["missing"]
        assert replica.call("GET", "/livez") == (200, {"ok": True}) == replica.call("GET", "/healthz")
    world["registry"].register(LATE, flipped=False)
    for replica in (a, b):
        wait_until(replica.ready, 30, f"{replica.process.name} ready with late v1")
        assert replica.models()[LATE]["version"] == "1"


def test_ab_is_sticky_across_replicas_and_feedback_is_taken_by_either(world):
    a, b = world["replicas"]
    experiment = publish_experiment(world, "ab", arms(0.5), unit_key="user")
    registry = world["registry"]
    seen_arms = set()
    for index in range(16):
        unit = f"user-{index}"
        # the unit three ways: loopline's header; the experiment's unit_key as a row field, as a header
        answers = [a.predict(unit=unit), b.predict(rows=[{**row, "user": unit} for row in ROWS]),
                   b.predict(headers={"user": unit})]
        expected = "1" if bucket(experiment, unit) < 0.5 else "2"
        assert {answer["version"] for answer in answers} == {expected}, unit
        assert {answer["arm"] for answer in answers} == {"champion" if expected == "1" else "challenger"}
        assert {answer["experiment"] for answer in answers} == {experiment}
        assert answers[0]["predictions"] == registry.answers(MODEL, expected, ROWS)
        seen_arms.add(answers[0]["arm"])
    assert seen_arms == {"champion", "challenger"}

    # feedback for a's predictions, posted to b: published with what the signed id carries
    answer = a.predict(unit="user-feedback")
    labels = [{"prediction_id": pid, "label": 1} for pid in answer["prediction_ids"]]
    assert b.call("POST", f"/models/{MODEL}/feedback", {"feedback": labels}) == (202, {"accepted": 3})
    single = a.predict(unit="user-single")["prediction_ids"][0]
    assert b.call("POST", f"/models/{MODEL}/feedback", {"prediction_id": single, "label": 0}) == (
        202, {"accepted": 1})
    got = world["observer"].wait_for(lambda o: len(found := feedback_of(o, answer["prediction_ids"] + [single])) == 4
                                     and found, 30, "the feedback on the topic")
    by_id = {d.data.prediction_id: d.data for d in got}
    for pid, prediction in zip(answer["prediction_ids"], answer["predictions"]):
        data = by_id[pid]
        assert (data.experiment, data.model_version, data.prediction, data.label) == (
            experiment, answer["version"], prediction, 1)
        assert abs(data.predicted_at - time.time()) < 60
    assert by_id[single].label == 0 and by_id[single].experiment == experiment

    # the prediction log carries the same signed ids, for the drift monitor
    world["observer"].wait_for(lambda o: any(d.data.prediction_ids == answer["prediction_ids"]
                                             for d in o.of_type(ev.PredictionLogged.TYPE, MODEL)),
                               30, "the prediction log")
    metrics = b.call("GET", "/metrics")[1]["text"]
    assert 'loopline_serving_requests_total{arm="challenger",model="clf",version="2"}' in metrics
    assert 'loopline_serving_feedback_total{model="clf",outcome="accepted"} 4.0' in metrics
    assert "loopline_serving_batch_rows_bucket" in metrics


def test_forged_malformed_and_misaddressed_ids_are_refused_and_nothing_is_published(world):
    a, b = world["replicas"]
    answer = a.predict()
    good = answer["prediction_ids"][0]
    payload, tag = good.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["v"] = "2"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode() + "." + tag
    url = f"/models/{MODEL}/feedback"

    status, body = b.call("POST", url, {"prediction_id": forged, "label": 1})
    assert status == 403 and "forged prediction id" in body["error"]
    status, body = b.call("POST", url, {"prediction_id": "not-an-id", "label": 1})
    assert status == 400 and "malformed prediction id" in body["error"]
    status, body = b.call("POST", url, {"feedback": [{"prediction_id": good, "label": 1},
                                                      {"prediction_id": forged, "label": 1}]})
    assert status == 403 and body["error"].startswith("feedback[1]: forged"), body
    status, body = b.call("POST", f"/models/{LATE}/feedback", {"prediction_id": good, "label": 1})
    assert status == 400 and "of model 'clf', not 'late'" in body["error"]
    status, body = b.call("POST", url, {"feedback": [{"prediction_id": good}]})
    assert status == 400 and "feedback[0]" in body["error"]

    # a marker sent after them, on the same partition: once it is there, nothing else came
    marker = answer["prediction_ids"][1]
    assert b.call("POST", url, {"prediction_id": marker, "label": 0})[0] == 202
    world["observer"].wait_for(lambda o: feedback_of(o, [marker]), 30, "the marker feedback")
    assert [d.data.prediction_id for d in feedback_of(world["observer"], answer["prediction_ids"] + [forged])] == [
        marker]
    metrics = b.call("GET", "/metrics")[1]["text"]
    for outcome in ("forged", "malformed", "mismatch"):
        assert f'outcome="{outcome}"' in metrics


def test_shadow_answers_as_the_champion_and_publishes_one_pair_per_request(world):
    a, b = world["replicas"]
    registry = world["registry"]
    experiment = publish_experiment(world, "shadow", arms(1.0))
    champion_only, challenger = registry.answers(MODEL, "1", ROWS), registry.answers(MODEL, "2", ROWS)
    assert champion_only != challenger
    answers = [(a if i % 2 else b).predict() for i in range(10)]
    for answer in answers:
        assert (answer["version"], answer["predictions"], answer["arm"]) == ("1", champion_only, "champion")
    requests = {tuple(answer["prediction_ids"]) for answer in answers}
    markers = {tuple(r.predict()["prediction_ids"]) for r in (a, b)}    # after them, on each replica

    def pairs(o: Observer, wanted: set) -> list:
        return [d.data for d in o.of_type(ev.ShadowPredicted.TYPE, MODEL) if tuple(d.data.prediction_ids) in wanted]

    world["observer"].wait_for(lambda o: len(pairs(o, markers)) == 2, 30, "the markers' shadow pairs")
    found = pairs(world["observer"], requests)
    assert sorted(tuple(p.prediction_ids) for p in found) == sorted(requests)      # exactly one each
    for pair in found:
        assert (pair.experiment, pair.champion_version, pair.challenger_version) == (experiment, "1", "2")
        assert (pair.champion, pair.challenger) == (champion_only, challenger)


def test_a_killed_replica_restarts_with_the_same_experiment_state(world):
    a, b = world["replicas"]
    posteriors = {"one": {"n": 40, "reward_sum": 22.0, "reward_sq": 22.0},
                  "two": {"n": 35, "reward_sum": 30.0, "reward_sq": 30.0}}
    experiment = publish_experiment(world, "bandit", arms(0.5, **posteriors), algorithm="thompson")
    before = a.models()[MODEL]["experiment"]
    assert before == b.models()[MODEL]["experiment"]
    assert [arm["n"] for arm in before["arms"]] == [40, 35]

    b.process.kill()                        # SIGKILL: no goodbye
    b.process.restart()
    wait_until(b.ready, 60, "the restarted replica ready")
    assert b.models()[MODEL]["experiment"] == before
    routed = b.predict()
    assert routed["experiment"] == experiment and routed["version"] in ("1", "2")
