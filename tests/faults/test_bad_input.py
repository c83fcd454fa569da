"""Thousands of malformed records on every input topic, interleaved with valid events.

Every bad record lands in the dead-letter topic, once, with its reason and its original bytes;
every valid event is processed; the worker never crashes. Hypothesis draws the records: random
bytes, truncated JSON, wrong types, oversized payloads, unknown types and schema versions,
missing CloudEvents attributes, tombstones, unknown models, and shell metacharacters and path
traversal in every string field (valid events carry those too: they are data, never commands).
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devstack.stack import REPO, LocalStack
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from tests.faults.invariants import unrequested

pytestmark = pytest.mark.slow

MODELS = ["m0", "m1", "m2", "m3"]
MAX_BYTES = 20_000
INPUT_ROLES = ["data", "drift", "metrics", "operator", "clock", "training", "training_requests",
               "promotion", "predictions", "feedback", "deployment"]
EVIL = st.sampled_from(["$(rm -rf /)", "`id`", "; reboot", "../../../etc/passwd", "a|b&c>d<e",
                        "{{steps.x.outputs.y}}", "'\"", "%s%n", "\\", "ü🙂", "\u202e", " -rf"])
TEXT = EVIL | st.text(max_size=20)


def envelope(**over) -> dict:
    doc = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "tests/fuzz",
           "type": ev.DataArrived.TYPE, "subject": "m0",
           "data": {"uri": "file:///d/x.parquet", "rows": 10, "version": "v1"}}
    doc.update(over)
    return doc


def dump(doc) -> bytes:
    return json.dumps(doc).encode()


@st.composite
def bad_record(draw) -> bytes | None:
    kind = draw(st.sampled_from(["bytes", "truncated", "wrong-type", "unknown-type", "schema",
                                 "missing", "tombstone", "huge", "unknown-model", "not-object"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=60).filter(lambda b: not b.strip().startswith(b"{")))
    if kind == "truncated":
        raw = dump(envelope(data={"uri": draw(TEXT) or "x", "rows": 1, "version": draw(TEXT) or "v"}))
        return raw[:draw(st.integers(1, len(raw) - 1))]
    if kind == "wrong-type":
        field = draw(st.sampled_from(["rows", "uri", "version"]))
        value = draw(st.sampled_from(["many", -5, 1.5, None, [1], {"a": 1}, True])
                     if field == "rows" else st.sampled_from([5, None, [], {}, True, ""]))
        data = {"uri": "file:///x", "rows": 1, "version": "v", field: value}
        return dump(envelope(data=data))
    if kind == "unknown-type":
        return dump(envelope(type="io.loopline." + draw(TEXT)))
    if kind == "schema":
        version = draw(st.sampled_from([0, 2, 99, "1", None]))
        return dump(envelope(data={"uri": "file:///x", "rows": 1, "version": "v",
                                   "schema_version": version}))
    if kind == "missing":
        doc = envelope()
        doc.pop(draw(st.sampled_from(["id", "source", "specversion", "type", "subject"])))
        return dump(doc)
    if kind == "tombstone":
        return None
    if kind == "huge":
        return dump(envelope(data={"uri": "file:///" + "a" * MAX_BYTES, "rows": 1, "version": "v"}))
    if kind == "unknown-model":
        return dump(envelope(subject="no-such-model-" + draw(TEXT)))
    return draw(st.sampled_from([b"[]", b"null", b"42", b'"text"', b"true"]))


@st.composite
def valid_event(draw):
    model = draw(st.sampled_from(MODELS))
    # a fresh uri per event: the same batch announced twice is (rightly) counted once
    data = ev.DataArrived(uri=f"file:///data/{uuid.uuid4().hex}/{draw(TEXT)}", rows=draw(st.integers(1, 1000)),
                          version=draw(TEXT) or "v", digest=draw(st.none() | TEXT))
    return build(data, model, source="tests/fuzz/" + draw(EVIL))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bootstrap):
    tmp = tmp_path_factory.mktemp("bad-input")
    config = tmp / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [{
        "name": name, "retrain": {"min_new_rows": 1},
        "pipeline": {"workdir": str(REPO), "steps": [
            {"name": "evaluate", "command": ["python", "-c", "raise SystemExit(1)"]}]}}
        for name in MODELS]}))
    with LocalStack(tmp / "state", config, bootstrap=bootstrap, prefix=f"f{uuid.uuid4().hex[:8]}",
                    partitions=2, extra_env={"LOOPLINE_MAX_EVENT_BYTES": str(MAX_BYTES)}) as stack:
        yield stack


@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          phases=[Phase.generate],      # no shrinking: each attempt costs a live stack's minute
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(bad=st.lists(st.tuples(st.sampled_from(INPUT_ROLES), bad_record()), min_size=1000, max_size=1000),
       good=st.lists(valid_event(), min_size=40, max_size=60))
def test_bad_records_are_dead_lettered_valid_events_processed_worker_survives(stack, bad, good):
    topics = stack.settings.topics
    # each drawn record goes to its drawn topic and to one more, in turn: 2,000 bad messages
    # (Hypothesis cannot draw 2,000 records of this variety in one example)
    bad = bad + [(INPUT_ROLES[i % len(INPUT_ROLES)], value) for i, (_, value) in enumerate(bad)]
    letters_before = len(stack.observer.dead_letters)
    with Publisher(stack.bootstrap, topics, max_request_size=2 * MAX_BYTES + 10_000) as publisher:
        step = max(1, len(bad) // len(good))
        for i, (role, value) in enumerate(bad):
            publisher.send_raw(getattr(topics, role), value, key=MODELS[i % len(MODELS)].encode())
            if i % step == 0 and i // step < len(good):
                publisher.send(good[i // step])
        for event in good[len(bad) // step:]:
            publisher.send(event)
        publisher.flush(60)

    sent = {event.key for event in good}
    stack.observer.wait_for(lambda o: not unrequested(o, sent), 120, "every valid event to be processed")
    letters = stack.observer.wait_for(
        lambda o: len(o.dead_letters) - letters_before >= len(bad) and o.dead_letters[letters_before:],
        120, f"{len(bad)} dead letters")

    stack.worker.check()                                       # never crashed
    assert len(letters) == len(bad), "each bad record exactly once"
    expected: dict = {}
    for role, value in bad:
        key = (getattr(topics, role), value)
        expected[key] = expected.get(key, 0) + 1
    got: dict = {}
    for letter in letters:
        key = (letter.topic, letter.value)
        got[key] = got.get(key, 0) + 1
        assert letter.reason and letter.offset >= 0
    assert got == expected
