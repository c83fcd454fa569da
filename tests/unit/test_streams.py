"""The bus contract: envelope modes, the codec's reasons, dead-letter records, topic names."""

from __future__ import annotations

import json

import pytest

from streams import events as ev
from streams.broker import probe
from streams.codec import DecodeError, build, decode, encode
from streams.deadletter import DeadLetter
from streams.envelope import CloudEvent, EnvelopeError, new_event
from streams.topics import Topics


def arrived(**extra) -> CloudEvent:
    return build(ev.DataArrived(uri="file:///d/b1.parquet", rows=10, version="b1"), "clf",
                 source="tests", **extra)


def test_structured_roundtrip_keeps_every_attribute():
    event = arrived()
    back = decode(encode(event)).event
    assert back == event
    doc = json.loads(encode(event))
    assert doc["specversion"] == "1.0" and doc["subject"] == "clf"
    assert doc["correlationid"] == event.id            # a chain starts with its first event


def test_binary_mode_is_read_too():
    event = arrived()
    back = decode(json.dumps(dict(event.data)).encode(), event.to_headers())
    assert back.event.id == event.id and back.data.rows == 10


def test_a_caused_event_joins_the_chain():
    first = arrived()
    second = new_event(ev.TrainingRequested.TYPE, "clf", {"idempotency_key": "k", "reason": "data"},
                       source="w", cause=first)
    third = new_event(ev.TrainingStarted.TYPE, "clf", {}, source="w", cause=second)
    assert second.causationid == first.id and third.causationid == second.id
    assert first.correlationid == second.correlationid == third.correlationid == first.id


def doc(**over):
    base = {"specversion": "1.0", "id": "1", "source": "s", "type": ev.DataArrived.TYPE,
            "subject": "clf", "data": {"uri": "file:///x", "rows": 1, "version": "v"}}
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


@pytest.mark.parametrize("value, reason", [
    pytest.param(None, "tombstone", id="tombstone"),
    pytest.param(b"\xff\xfe", "not UTF-8", id="binary garbage"),
    pytest.param(b"{", "not JSON", id="truncated json"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep nesting"),
    pytest.param(b'"text"', "JSON object", id="not an object"),
    pytest.param(doc(id=None), "'id'", id="missing id"),
    pytest.param(doc(id=5), "'id'", id="id not a string"),
    pytest.param(doc(specversion="0.3"), "specversion", id="old specversion"),
    pytest.param(doc(subject=None), "subject", id="no model name"),
    pytest.param(doc(time="yesterday"), "RFC 3339", id="bad time"),
    pytest.param(doc(data=[1]), "'data' must be a JSON object", id="data not an object"),
    pytest.param(doc(Weird="x"), "extension attribute name", id="bad extension name"),
    pytest.param(doc(type="x.unknown"), "unknown event type", id="unknown type"),
    pytest.param(doc(data={"uri": "file:///x", "rows": "1", "version": "v"}), "rows", id="string for int"),
    pytest.param(doc(data={"uri": "file:///x", "rows": -1, "version": "v"}), "rows", id="negative rows"),
    pytest.param(doc(data={"uri": "file:///x", "rows": 1}), "version", id="missing field"),
    pytest.param(doc(data={"uri": "file:///x", "rows": 1, "version": "v", "extra": 1}), "extra",
                 id="unknown field"),
    pytest.param(doc(data={"uri": "file:///x", "rows": 1, "version": "v", "schema_version": 2}),
                 "schema_version", id="future schema version"),
])
def test_every_bad_record_gets_a_clear_reason(value, reason):
    with pytest.raises(DecodeError) as err:
        decode(value)
    assert reason in str(err.value)


def test_size_limit_and_topic_types():
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(b" " * 101, max_bytes=100)
    with pytest.raises(DecodeError, match="does not belong on this topic"):
        decode(encode(arrived()), accepts=(ev.ModelPromoted.TYPE,))


def test_dead_letter_keeps_bytes_provenance_and_reason():
    letter = DeadLetter(value=b"\x00raw", key=b"clf", topic="p.data.arrived", partition=3,
                        offset=42, reason="value is not JSON", headers=(("trace", b"1"),))
    key, value, headers = letter.to_record()
    back = DeadLetter.from_record(key, value, headers)
    assert (back.value, back.key, back.topic, back.partition, back.offset, back.reason) == (
        b"\x00raw", b"clf", "p.data.arrived", 3, 42, "value is not JSON")
    assert back.headers == (("trace", b"1"),)
    with pytest.raises(ValueError):
        DeadLetter.from_record(b"k", b"v", [])


def test_topic_names_follow_one_dotted_scheme():
    topics = Topics("acme")
    assert topics.data == "acme.data.arrived"
    assert topics.training_requests == "acme.training.requested"
    assert topics.for_type(ev.DeploymentRolledBack.TYPE) == "acme.deployment.status"
    assert all(name.startswith("acme.") for name in topics.all())
    with pytest.raises(EnvelopeError):
        CloudEvent.from_dict({"id": "1"})


def test_a_broker_address_without_a_port_is_refused_before_any_connection():
    assert probe("kafka") == "'kafka' is not HOST:PORT"
    assert probe("kafka:x, :9092x") == "'kafka:x' is not HOST:PORT; ':9092x' is not HOST:PORT"
