"""Operator control end to end: signed commands, the gate, pause/resume, the DLQ, /metrics.

One stack (real broker, real worker process) for the module, a one-step pipeline so trainings
take about a second; each test starts from "no training in flight". Commands are built and
signed exactly as `loopline publish` does; the bad ones are what an attacker or a mistake
would send. What the tests assert is read back from the topics, the trigger's changelog and
the worker's /metrics.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopline.commands.operator import command_event
from devstack.stack import LocalStack
from streams import events as ev
from streams.codec import build, decode
from streams.publisher import Publisher
from streams.signing import OperatorKey
from tests.integration.loop_harness import MODEL, data_event, write_config
from tests.integration.operator_harness import (
    ALICE,
    CAROL,
    Cli,
    cli_env,
    cli_process,
    wait_state,
    write_keys,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

MALLORY = OperatorKey("mallory-1", "mallory", b"mallory-secret-0123456789abcdef")  # in no keys file
METRICS = ("loopline_events_consumed", "loopline_decisions", "loopline_operator_commands",
           "loopline_trainings_in_flight", "loopline_job_duration_seconds", "loopline_consumer_lag",
           "loopline_dead_letters", "loopline_data_to_deployment_seconds")


@pytest.fixture(scope="module")
def env(tmp_path_factory, bootstrap):
    root = tmp_path_factory.mktemp("operator")
    config = write_config(root / "loopline.yaml", min_new_rows=500,
                          steps=[{"name": "evaluate", "command": ["python", "-c", "pass"]}])
    worker_keys = write_keys(root / "worker-keys.yaml", ALICE)           # carol is not known yet
    cli_keys = write_keys(root / "cli-keys.yaml", ALICE, CAROL)
    with LocalStack(root / "state", config, bootstrap=bootstrap, prefix=LocalStack.unique_prefix(),
                    partitions=2, extra_env={"LOOPLINE_OPERATOR_KEYS": str(worker_keys),
                                             "LOOPLINE_LAG_INTERVAL": "1"}) as stack:
        yield {"stack": stack, "root": root, "worker_keys": worker_keys,
               "cli": cli_env(stack, cli_keys)}


@pytest.fixture
def cli(monkeypatch, capsys):
    return Cli(monkeypatch, capsys)


def publish(stack: LocalStack, *events) -> None:
    with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
        for event in events:
            publisher.publish(event)


def idle(stack: LocalStack):
    return wait_state(stack, lambda s: s.in_flight is None, 60, "no training in flight")


def requests(stack: LocalStack) -> list:
    return stack.observer.of_type(ev.TrainingRequested.TYPE, MODEL)


def send_rejected(stack: LocalStack, accepted) -> dict[str, str]:
    """Send one command per reason the gate refuses (`accepted` replayed, a forged, an unsigned, an
    expired one and one signed with a key nobody knows); returns event id -> its dead letter's phrase."""
    forger = OperatorKey("alice-1", "alice", b"not-alices-secret-0123456789")
    forged = command_event("retrain", MODEL, "forged", None, forger, time.time(), 600)
    unsigned = build(ev.OperatorCommand(command="retrain", reason="unsigned", operator="alice"),
                     MODEL, source="tests/unsigned")
    expired = command_event("retrain", MODEL, "expired", None, ALICE, time.time() - 3600, 600)
    stranger = command_event("retrain", MODEL, "stranger", None, MALLORY, time.time(), 600)
    topics = stack.settings.topics
    with Publisher(stack.bootstrap, topics) as publisher:
        publisher.send_raw(topics.operator, accepted.to_json(), key=MODEL.encode()).get(10)  # replay
        for event in (forged, unsigned, expired, stranger):
            publisher.publish(event)
    return {accepted.id: "replayed operator command", forged.id: "bad signature",
            unsigned.id: "unsigned operator command", expired.id: "expired",
            stranger.id: "unknown operator key id 'mallory-1'"}


def wait_verified(stack: LocalStack, command_id: str, timeout: float = 60) -> None:
    stack.observer.wait_for(
        lambda o: sum(d.event.id == command_id for d in o.events) >= 2, timeout,
        f"command {command_id} on the verified topic")


def test_operator_signed_retrain_starts_a_training_and_bad_commands_start_nothing(env):
    stack = env["stack"]
    idle(stack)
    done = cli_process(env["cli"], "publish", "retrain", "--model", MODEL, "--reason", "weekly refresh")
    assert done.returncode == 0, done.stderr
    command_id = done.stdout.split()[2]
    assert done.stdout.startswith(f"published retrain {command_id} for {MODEL} as alice (key alice-1")

    request = stack.observer.wait_for(
        lambda o: [d for d in o.of_type(ev.TrainingRequested.TYPE) if d.event.causationid == command_id],
        30, "the training request of the signed command")[0]
    assert request.data.reason == "manual"
    started = stack.observer.wait_for(
        lambda o: [d for d in o.of_type(ev.TrainingStarted.TYPE) if d.event.causationid == request.event.id],
        30, "the training to start")[0]
    assert started.data.created
    command = next(d.event for d in stack.observer.of_type(ev.OperatorCommand.TYPE)
                   if d.event.id == command_id)
    assert command.data["operator"] == "alice" and command.extensions["keyid"] == "alice-1"
    idle(stack)

    before_requests, before_starts = len(requests(stack)), len(stack.observer.of_type(ev.TrainingStarted.TYPE))
    bad = send_rejected(stack, command)
    marker = command_event("resume", MODEL, "marker: everything before me was handled", None,
                           ALICE, time.time(), 600)
    publish(stack, marker)
    wait_verified(stack, marker.id)        # same partition, in order: the bad ones are done

    def these(o) -> list:
        return [d for d in o.dead_letters if d.topic == stack.settings.topics.operator
                and decode(d.value, d.headers).event.id in bad]

    letters = stack.observer.wait_for(lambda o: len(these(o)) >= len(bad) and these(o), 60,
                                      f"{len(bad)} dead-lettered commands")
    reasons = {decode(d.value, d.headers).event.id: d.reason for d in letters}
    assert len(letters) == len(bad) and set(reasons) == set(bad)          # each exactly once
    for event_id, phrase in bad.items():
        assert phrase in reasons[event_id], (phrase, reasons[event_id])
    assert all(d.error == "CommandRejected" for d in letters)
    # None was forwarded (the marker, behind them on the verified topic, is), so the trigger never
    # saw one: nothing can have been requested or started for them.
    assert sum(d.event.id == command_id for d in stack.observer.events) == 3  # sent, forwarded, replayed
    for event_id in set(bad) - {command_id}:
        assert sum(d.event.id == event_id for d in stack.observer.events) == 1   # never forwarded
    assert len(requests(stack)) == before_requests
    assert len(stack.observer.of_type(ev.TrainingStarted.TYPE)) == before_starts


def test_operator_pause_suppresses_data_triggers_and_resume_retrains_once(env, cli, tmp_path):
    stack = env["stack"]
    idle(stack)
    code, out = cli(env["cli"], "publish", "pause", "--model", MODEL, "--reason", "incident 42")
    assert code == 0, out
    state = wait_state(stack, lambda s: s.paused, 60, "paused")
    suppressed_before, requests_before = state.suppressed, len(requests(stack))

    commands_before = len(stack.observer.of_type(ev.OperatorCommand.TYPE))
    code, out = cli(env["cli"], "publish", "retrain", "--model", MODEL, "--reason", "what if", "--dry-run")
    assert code == 0, out
    assert "nothing published" in out and "would: request a training (reason manual)" in out
    assert "paused=True" in out

    arrivals = [data_event(i, tmp_path / "data") for i in range(3)]      # 500 rows each, bar 500
    publish(stack, *arrivals)
    state = wait_state(stack, lambda s: s.suppressed >= suppressed_before + 3, 60, "3 suppressed")
    assert state.suppressed == suppressed_before + 3 and state.pending == ("data",)
    assert len(requests(stack)) == requests_before

    status = cli.json(env["cli"], "status", "--model", MODEL)["models"][MODEL]
    assert status["paused"] is True and status["suppressed_triggers"] == suppressed_before + 3
    assert status["pending"] == ["data"] and status["in_flight"] is None
    assert status["last_events"][ev.DataArrived.TYPE]["id"] == arrivals[-1].id
    code, out = cli(env["cli"], "publish", "resume", "--model", MODEL, "--reason", "resolved", "--dry-run")
    assert "would: resume and request a training (reason followup:data)" in out, out
    assert len(stack.observer.of_type(ev.OperatorCommand.TYPE)) == commands_before   # dry runs publish nothing

    resumed_at = time.time()
    code, out = cli(env["cli"], "publish", "resume", "--model", MODEL, "--reason", "incident resolved")
    assert code == 0, out
    followup = stack.observer.wait_for(lambda o: requests(stack)[requests_before:], 60,
                                       "the pending retrain")[0]
    assert followup.data.reason == "followup:data"
    assert set(followup.data.causes) == {a.key for a in arrivals}
    assert followup.data.data_versions == ["batch-00002"]                   # window of 1 batch
    state = wait_state(stack, lambda s: s.in_flight is None and (s.last_request_at or 0) >= resumed_at,
                       60, "the follow-up to be requested and its end handled")
    assert len(requests(stack)) == requests_before + 1                      # and nothing after it
    assert not state.paused and not state.pending


def test_operator_dlq_replay_processes_a_command_after_its_key_is_added(env, cli, tmp_path):
    stack = env["stack"]
    idle(stack)
    carol = dict(env["cli"], LOOPLINE_OPERATOR_KEY_ID=CAROL.key_id)
    code, out = cli(carol, "publish", "retrain", "--model", MODEL, "--reason", "carol's first day")
    assert code == 0, out
    command_id = out.split()[2]
    stack.observer.wait_for(lambda o: [d for d in o.dead_letters if b"carol-1" in (d.value or b"")],
                            60, "carol's command to be dead-lettered")
    listed = cli.json(env["cli"], "dlq", "list", "--model", MODEL)
    entry = next(row for row in listed if row["event_id"] == command_id)
    assert entry["error"] == "CommandRejected" and "unknown operator key id 'carol-1'" in entry["reason"]
    assert entry["topic"] == stack.settings.topics.operator and entry["replayed_by"] == []
    assert not [d for d in requests(stack) if d.event.causationid == command_id]

    write_keys(env["worker_keys"], ALICE, CAROL)            # the cause removed: carol gets a key
    code, out = cli(env["cli"], "dlq", "replay", entry["id"])
    assert code == 0, out
    assert f"replayed dead letter {entry['id']}" in out
    request = stack.observer.wait_for(
        lambda o: [d for d in requests(stack) if d.event.causationid == command_id], 60,
        "the replayed command's training request")[0]
    assert request.data.reason == "manual"

    listed = cli.json(env["cli"], "dlq", "list", "--model", MODEL)
    entry = next(row for row in listed if row["event_id"] == command_id and row["replay_of"] is None)
    assert len(entry["replayed_by"]) == 1 and entry["replayed_by"][0].startswith(stack.settings.topics.operator)
    code, out = cli(env["cli"], "dlq", "replay", entry["id"])
    assert code == 2 and "already replayed" in out
    code, out = cli(env["cli"], "events", "tail", "--type", "operator.command", "--model", MODEL, "-n", "100")
    assert code == 0 and command_id in out and "retrain by carol: carol's first day (verified)" in out

    # a record that can never be processed as it is: replay a fixed one in its place
    idle(stack)
    topics = stack.settings.topics
    with Publisher(stack.bootstrap, topics) as publisher:
        publisher.send_raw(topics.data, b'{"rows": 500', key=MODEL.encode()).get(10)
    stack.observer.wait_for(lambda o: [d for d in o.dead_letters if d.value == b'{"rows": 500'], 60,
                            "the broken data record to be dead-lettered")
    broken = next(row for row in cli.json(env["cli"], "dlq", "list") if row["topic"] == topics.data)
    assert "not JSON" in broken["reason"] and broken["type"] is None
    fixed = data_event(7, tmp_path / "data")
    (tmp_path / "fixed.json").write_bytes(fixed.to_json())
    code, out = cli(env["cli"], "dlq", "replay", broken["id"], "--file", str(tmp_path / "fixed.json"))
    assert code == 0, out
    stack.observer.wait_for(lambda o: [d for d in requests(stack) if d.event.causationid == fixed.id],
                            60, "the fixed data event's training request")


def test_operator_metrics_endpoint_parses_and_counts_what_happened(env, tmp_path):
    stack = env["stack"]
    idle(stack)
    url = f"http://127.0.0.1:{stack.worker.web_port}/metrics"
    operator = stack.settings.topics.operator
    # What this test makes happen, and by how much each sample must move because of it.
    moves = [("loopline_events_consumed_total", {"agent": "trigger", "type": ev.DataArrived.TYPE}, 2),
             ("loopline_decisions_total", {"decision": "retrain", "outcome": "requested"}, 2),
             ("loopline_decisions_total", {"decision": "retrain", "outcome": "suppressed"}, 1),
             ("loopline_job_duration_seconds_count", {"launcher": "local", "outcome": "succeeded"}, 2),
             ("loopline_dead_letters_total", {"topic": operator, "error": "CommandRejected"}, 5)]
    moves += [("loopline_operator_commands_total", {"outcome": outcome}, 1) for outcome in
              ("accepted", "replayed", "bad_signature", "unsigned", "expired", "unknown_key")]

    def scrape() -> dict:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def value(families: dict, sample: str, labels: dict) -> float:
        family = families.get(sample.rsplit("_", 1)[0])
        return sum(s.value for s in (family.samples if family else ())
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    def moved(families: dict) -> list[float]:
        return [value(families, sample, labels) - value(before, sample, labels) for sample, labels, _ in moves]

    before = scrape()
    accepted = command_event("resume", MODEL, "metrics", None, ALICE, time.time(), 600)
    publish(stack, accepted)
    send_rejected(stack, accepted)                                # one command per refusal reason
    publish(stack, data_event(10, tmp_path / "data"), data_event(11, tmp_path / "data"))  # the 2nd: suppressed

    expected = [delta for _, _, delta in moves]

    def all_moved() -> dict | None:
        families = scrape()
        return families if all(m >= e for m, e in zip(moved(families), expected)) else None

    families = wait_until(all_moved, 120, "every counter to move")
    got = moved(families)
    assert got == expected, [(sample, labels, g) for (sample, labels, _), g in zip(moves, got)]
    families = wait_until(lambda: (f := scrape())["loopline_consumer_lag"].samples and f, 15,
                          "the first lag measurement")  # every second here
    assert set(METRICS) <= set(families)
    assert families["loopline_events_consumed"].type == "counter"
    assert families["loopline_job_duration_seconds"].type == "histogram"
    for s in (s for f in families.values() for s in f.samples):
        assert not any(len(v) >= 32 and "-" in v for v in s.labels.values()), s   # no ids as labels
