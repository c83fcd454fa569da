"""Records of any size on every input topic: processed, or dead-lettered with their bytes kept.

On each topic written from outside the worker (data, drift, metrics, operator commands,
predictions, feedback) go, in order on one partition, a valid event padded to 0.5x and to
exactly 1x LOOPLINE_MAX_EVENT_BYTES (both processed), one padded to 3x (dead-lettered: its
value spilled, readable, the same sha256) and a plain valid event after it (processed: the
oversized record holds nothing up). No agent may crash or restart on the way.

The limit is 64 kB so that 3x (192 kB) stays under what every broker and client accepts
without configuration (message.max.bytes, max.request.size: ~1 MB): the test is about the
worker's limit, and runs unchanged on Apache Kafka.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import REPO, LocalStack
from streams import events as ev
from streams import signing
from streams.codec import build
from streams.envelope import CloudEvent
from streams.publisher import Publisher
from streams.spill import read
from tests.integration.operator_harness import ALICE, Cli, write_keys
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.every_broker]   # on Tansu and on Apache Kafka

MODEL = "clf"
LIMIT = 64 * 1024
SIZES = (LIMIT // 2, LIMIT, 3 * LIMIT)


def data(n: int) -> ev.EventData:
    return ev.DataArrived(uri=f"file:///data/{n}.parquet", rows=1, version=f"v{n}")


# role -> (a valid event's data, given a number; the agent whose events_consumed counts it)
EVENTS = {
    "data": (data, "trigger"),
    "drift": (lambda n: ev.DriftDetected(dataset_version=f"v{n}", reference_version="v0",
                                         drift_share=0.5), "trigger"),
    "metrics": (lambda n: ev.MetricReported(metric="accuracy", value=0.9, count=10,
                                            model_version="1"), "trigger"),
    "operator": (lambda n: ev.OperatorCommand(command="resume", reason=f"size test {n}",
                                              operator=ALICE.operator), "operatorgate"),
    "predictions": (lambda n: ev.PredictionLogged(model_version="1", prediction_ids=[f"p{n}"],
                                                  features=[{"x": n}], predictions=[1]), "driftmonitor"),
    "feedback": (lambda n: ev.FeedbackReceived(prediction_id=f"p{n}", model_version="1", label=1,
                                               prediction=1), None),     # the batch path: counted
}


def finish(event: CloudEvent) -> CloudEvent:
    """Operator commands are signed (after padding: the signature covers it)."""
    if event.type == ev.OperatorCommand.TYPE:
        return signing.sign(event, ALICE, now=time.time())
    return event


def padded(event: CloudEvent, size: int) -> bytes:
    """`event` as a structured record of exactly `size` bytes (an extension attribute pads it)."""
    bare = len(finish(event.with_extensions(padding="")).to_json())
    raw = finish(event.with_extensions(padding="x" * (size - bare))).to_json()
    assert len(raw) == size
    return raw


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def stack(tmp_path, bootstrap, prefix):
    config = tmp_path / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{
        "name": MODEL,
        # The request fires on the third valid data event (rows 1 each), the one after the
        # oversized record; drift below 1.0 is ignored, so nothing else requests one.
        "retrain": {"min_new_rows": 3, "min_drift_share": 1.0},
        "metrics": {"floor": 0.0, "window_seconds": 3600, "min_count": 1},
        "pipeline": {"workdir": str(REPO), "steps": [
            {"name": "evaluate", "command": ["python", "-c", "raise SystemExit(1)"]}]}}]}))
    keys = write_keys(tmp_path / "keys.yaml", ALICE)
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    extra_env={"LOOPLINE_MAX_EVENT_BYTES": str(LIMIT),
                               "LOOPLINE_OPERATOR_KEYS": str(keys)}) as stack:
        yield stack


def test_records_of_any_size_are_processed_or_dead_lettered_with_their_bytes(stack, monkeypatch,
                                                                              capsys):
    topics = stack.settings.topics
    oversized: dict[str, bytes] = {}                   # topic -> the 3x record sent there
    data_keys = []
    with Publisher(stack.bootstrap, topics) as publisher:
        for role, (make, _) in EVENTS.items():
            topic = getattr(topics, role)
            for n, size in enumerate(SIZES):
                event = build(make(n), MODEL, source="tests/sizes")
                raw = padded(event, size)
                publisher.send_raw(topic, raw, key=MODEL.encode())
                if size > LIMIT:
                    oversized[topic] = raw
                elif role == "data":
                    data_keys.append(event.key)
            after = finish(build(make(9), MODEL, source="tests/sizes"))
            publisher.send_raw(topic, after.to_json(), key=MODEL.encode())
            if role == "data":
                data_keys.append(after.key)
        publisher.flush(30)

    # Every valid event is processed, the one after the oversized record included.
    stack.observer.wait_for(
        lambda o: [d for d in o.of_type(ev.TrainingRequested.TYPE) if set(data_keys) <= set(d.data.causes)],
        60, "the training request of the three valid data events")
    port = stack.worker.web_port

    def handled() -> dict[str, float] | None:
        """Valid events handed to each topic's owner so far, once each has had three."""
        samples = scrape(port)
        out = {role: sample(samples, "loopline_events_consumed_total", agent=agent,
                            type=build(make(0), MODEL, source="-").type)
               for role, (make, agent) in EVENTS.items() if agent}
        out["feedback"] = sample(samples, "loopline_feedback_total", model=MODEL, outcome="counted")
        return out if all(v >= 3 for v in out.values()) else None

    counts = wait_until(handled, 60, "three valid events handled on every topic")
    assert counts == {role: 3 for role in EVENTS}, "the oversized record is never handled"
    assert sample(scrape(port), "loopline_operator_commands_total",
                  command="resume", outcome="accepted") == 3

    # Every oversized record is dead-lettered once; its bytes are where the dead letter says.
    letters = stack.observer.wait_for(lambda o: len(o.dead_letters) >= len(oversized) and o.dead_letters[:],
                                      60, f"{len(oversized)} dead letters")
    assert sorted(d.topic for d in letters) == sorted(oversized), "only the oversized, each once"
    for letter in letters:
        sent = oversized[letter.topic]
        assert letter.value == b"" and letter.spilled is not None and "exceeds the limit" in letter.reason
        assert letter.spilled.size == len(sent)
        assert letter.spilled.sha256 == hashlib.sha256(sent).hexdigest()
        assert read(letter.spilled) == sent

    # `dlq replay` publishes the spilled bytes themselves (still too large: dead-lettered again).
    data_letter = next(d for d in letters if d.topic == topics.data)
    cli = Cli(monkeypatch, capsys)
    listed = cli.json(stack.env(), "dlq", "list")
    ref = next(row["id"] for row in listed if row["topic"] == topics.data)
    assert next(row for row in listed if row["id"] == ref)["spilled"]["uri"] == data_letter.spilled.uri
    code, out = cli(stack.env(), "dlq", "replay", ref)
    assert code == 0, out
    again = stack.observer.wait_for(lambda o: o.dead_letters[len(letters):], 60, "the replay's dead letter")
    assert again[0].spilled == data_letter.spilled
    assert ("loopline.replay.of", f"deadletter:{ref}".encode()) in again[0].headers

    # No dead letter failed to go out, and no agent crashed or was restarted.
    samples = scrape(port)
    assert not [k for k, v in samples.items() if k[0] == "loopline_dead_letter_failures_total" and v]
    stack.worker.check()
    log = stack.worker.log.read_text(errors="replace")
    assert "Crashed reason=" not in log and "Restarting dead" not in log
