"""A model family end to end: one entry in loopline.yaml, fifty members made by events alone.

Real broker, worker, local launcher and MLflow tracking server (on the session's PostgreSQL);
the training step talks to MLflow over REST (tests/integration/steps/rest_train.py) so fifty
trainings fit in a test. Events go in as another team's producer sends them: each keyed its own
way (or not at all), on whatever partition that gives.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import mlflow
import pytest
import yaml
from kafka import KafkaProducer

from devstack.stack import REPO, LocalStack
from devstack.tracking_server import TrackingServer, create_database, drop_database
from streams import events as ev
from streams.codec import build
from streams.codec import encode, encode_headers
from tests.integration.loop_harness import outcome_of
from tests.integration.operator_harness import cli_process

pytestmark = pytest.mark.slow

FAMILY = "churn"
STEP = ["python", "-m", "tests.integration.steps.rest_train"]


def family_config(path) -> None:
    path.write_text(yaml.safe_dump({"families": [{
        "name": FAMILY,
        "pipeline": {"launcher": "local", "workdir": str(REPO),
                     "steps": [{"name": "evaluate", "command": STEP, "timeout_seconds": 120}]},
        "retrain": {"min_new_rows": 100},
        "gate": {"metric": "accuracy", "min_value": 0.5},
        "params": {"quality": "0.9"},
        "overrides": {"picky": {"retrain": {"min_new_rows": 250}, "params": {"quality": "0.97"}},
                      "served": {"params": {"real_model": "true"}}},
        "max_members": 60,
    }]}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bootstrap, postgres):
    tmp = tmp_path_factory.mktemp("families")
    family_config(tmp / "loopline.yaml")
    backend = create_database(postgres.dsn)
    try:
        with TrackingServer(backend, tmp / "artifacts", tmp / "mlflow.log") as server, \
                LocalStack(tmp / "state", tmp / "loopline.yaml", bootstrap=bootstrap,
                           prefix=f"t{uuid.uuid4().hex[:10]}", partitions=4, serving=True,
                           mlflow_uri=server.uri) as stack:
            yield stack
    finally:
        drop_database(backend)


def send(stack: LocalStack, *events, key=lambda i, e: None) -> None:
    """As a foreign producer: its own keys (None: round-robin over the partitions)."""
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for i, event in enumerate(events):
        k = key(i, event)
        producer.send(stack.settings.topics.data, encode(event), key=k.encode() if k else None,
                      headers=encode_headers())
    producer.flush()
    producer.close()


def arrived(member: str, rows: int = 100, n: int = 0):
    return build(ev.DataArrived(uri=f"file:///data/{member}/{n}.parquet", rows=rows, version=f"{member}-{n}"),
                 f"{FAMILY}.{member}", source="tests/families")


def outcomes(stack: LocalStack, events, timeout: float):
    """The end of each event's chain (deployed, rejected, failed), waited for together."""
    def ends(o):
        requests = {d.event.causationid: d for d in o.of_type(ev.TrainingRequested.TYPE)}
        found = {}
        for e in events:
            request = requests.get(e.id)
            end = outcome_of(o, request.event.id) if request is not None else None
            if end is None:
                return None
            found[e.subject] = end
        return found
    return stack.observer.wait_for(ends, timeout, f"{len(events)} trainings to end")


def test_fifty_members_made_by_events_alone_train_and_promote_independently(stack):
    members = [f"m{i:02d}" for i in range(50)]
    events = [arrived(m) for m in members]
    # keyed three ways, as producers in the wild do: by member, by something else, not at all
    send(stack, *events, key=lambda i, e: [e.subject, f"tenant-{i}", None][i % 3])

    done = outcomes(stack, events, timeout=300)
    assert {e.subject for e in events} == set(done)
    client = mlflow.MlflowClient(tracking_uri=stack.settings.tracking_uri,
                                 registry_uri=stack.settings.tracking_uri)
    for event in events:
        end = done[event.subject]
        assert end.event.type == ev.DeploymentDone.TYPE, end.data
        assert end.event.subject == event.subject and end.event.correlationid == event.id
        # each member its own registered model, version 1 its champion
        assert end.data.version == "1"
        assert str(client.get_model_version_by_alias(event.subject, "champion").version) == "1"
    assert len({d.event.correlationid for d in done.values()}) == 50

    member = events[7].subject
    status = cli_process(stack.env(), "status", "--model", member, "--json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)["models"][member]
    assert str(row["champion"]["version"]) == "1", row

    lineage = cli_process(stack.env(), "lineage", member, "1", "--json")
    assert lineage.returncode == 0, lineage.stderr
    chain = json.loads(lineage.stdout)
    assert [t["id"] for t in chain["triggers"]] == [events[7].id]
    assert chain["evaluation"]["passed"] and chain["evaluation"]["candidate_metrics"]["accuracy"] == 0.9


def test_a_member_override_changes_only_that_member(stack):
    first, plain = arrived("picky", rows=100, n=0), arrived("plain", rows=100, n=0)
    send(stack, first, plain, key=lambda i, e: e.subject)
    # the family's 100 rows train `plain`; `picky` needs 250 (its override) and waits
    done = outcomes(stack, [plain], timeout=120)
    assert done[plain.subject].event.type == ev.DeploymentDone.TYPE
    decision = stack.observer.wait_for(
        lambda o: [d for d in o.of_type(ev.DecisionRecorded.TYPE, first.subject)
                   if d.event.causationid == first.id], 30, "picky's decision on its first batch")[0]
    assert decision.data.outcome == "skipped" and not stack.observer.of_type(
        ev.TrainingRequested.TYPE, first.subject)

    more = arrived("picky", rows=200, n=1)
    send(stack, more)
    end = outcomes(stack, [more], timeout=120)[more.subject]
    assert end.event.type == ev.DeploymentDone.TYPE, end.data
    evaluated = [d for d in stack.observer.of_type(ev.ModelEvaluated.TYPE, more.subject)]
    assert evaluated[-1].data.candidate_metrics["accuracy"] == 0.97        # its own params
    plain_eval = stack.observer.of_type(ev.ModelEvaluated.TYPE, plain.subject)
    assert plain_eval[-1].data.candidate_metrics["accuracy"] == 0.9        # the family's


@pytest.mark.parametrize("subject, reason", [
    (f"{FAMILY}.bad key!", "does not match member_pattern"),
    (f"{FAMILY}.", "does not match member_pattern"),
    ("nofamily.acme", "unknown model 'nofamily.acme'"),
])
def test_a_bad_family_key_is_dead_lettered_with_the_reason(stack, subject, reason):
    bad = build(ev.DataArrived(uri="file:///data/x.parquet", rows=100, version="x"), subject,
                source="tests/families")
    send(stack, bad, key=lambda i, e: "whatever")
    letter = stack.observer.wait_for(
        lambda o: [d for d in o.dead_letters if bad.id.encode() in d.value], 30,
        f"the dead letter of {subject!r}")[0]
    assert reason in letter.reason, letter.reason
    assert not stack.observer.of_type(ev.TrainingRequested.TYPE, subject)


def test_a_restarted_worker_knows_the_members_it_finds_in_its_state(stack):
    """Nothing names `churn.sleeper` after the restart but its state: the new worker learns it
    from the recovered table at its first tick (and reports its in-flight gauge on /metrics)."""
    sleeper = arrived("sleeper", rows=10)                    # below the threshold: state, no run
    send(stack, sleeper, key=lambda i, e: e.subject)
    stack.observer.wait_for(lambda o: [d for d in o.of_type(ev.DecisionRecorded.TYPE, sleeper.subject)
                                       if d.event.causationid == sleeper.id], 30, "sleeper's decision")
    stack.restart_worker()
    series = f'loopline_trainings_in_flight{{model="{sleeper.subject}"}} 0.0'
    deadline = time.monotonic() + 30
    while series not in (page := urllib.request.urlopen(
            f"http://127.0.0.1:{stack.worker.web_port}/metrics", timeout=5).read().decode()):
        assert time.monotonic() < deadline, page[-2000:]
        time.sleep(0.2)


def predict(stack: LocalStack, model: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.serve_port}/models/{model}/predict",
                                     data=json.dumps({"rows": [{"f0": 1.0, "f1": 0.0}]}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serving_takes_a_member_in_on_its_first_request(stack):
    served = arrived("served")
    send(stack, served, key=lambda i, e: e.subject)
    end = outcomes(stack, [served], timeout=180)[served.subject]
    assert end.event.type == ev.DeploymentDone.TYPE, end.data

    deadline = time.monotonic() + 60
    while (answer := predict(stack, served.subject))[0] != 200:
        assert answer[0] == 503, answer                  # taken in, its champion loading
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    assert answer[1]["model"] == served.subject and answer[1]["version"] == "1"
    for name in (f"{FAMILY}.bad key!", "nofamily.acme"):
        code, body = predict(stack, urllib.parse.quote(name))
        assert code == 404 and "is not served here" in body["error"], body
