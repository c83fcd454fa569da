"""A poison record on any input topic is dead-lettered once, with its reason; the next is processed."""

from __future__ import annotations

import json

import pytest

from devstack.stack import LocalStack
from loopline.commands.snapshot import fetch
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from tests.integration.loop_harness import MODEL, data_event, write_config

pytestmark = [pytest.mark.slow, pytest.mark.every_broker]   # on Tansu and on Apache Kafka

INPUT_ROLES = ("data", "drift", "operator", "clock", "training", "training_requests", "promotion")


def envelope(event_type: str, data: dict, subject: str = MODEL) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "bad-1", "source": "tests/poison",
                       "type": event_type, "subject": subject, "data": data}).encode()


def poison(topic_type: str) -> list[tuple[bytes | None, str]]:
    """(value, a phrase its dead-letter reason must contain) for every way a record can be bad."""
    return [
        (b"\xff\xfe not even text", "not UTF-8"),
        (b'{"id": "1", "source": "x"', "not JSON"),
        (b'{"hello": "world"}', "required attribute 'id'"),
        (b"[1, 2, 3]", "JSON object"),
        (None, "tombstone"),
        (envelope("com.example.unknown", {}), "unknown event type"),
        (envelope(topic_type, {"schema_version": 99}), "schema_version"),
        (envelope(topic_type, {"rows": "many", "uri": 5}), "is invalid"),
    ]


ACCEPTED = {"data": ev.DataArrived.TYPE, "drift": ev.DriftDetected.TYPE,
            "operator": ev.OperatorCommand.TYPE, "clock": ev.ClockTicked.TYPE,
            "training": ev.TrainingSucceeded.TYPE, "training_requests": ev.TrainingRequested.TYPE,
            "promotion": ev.ModelPromoted.TYPE}


def test_poison_records_are_dead_lettered_and_the_agents_go_on(tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml",
                          steps=[{"name": "evaluate", "command": ["python", "-c", "pass"]}])
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix,
                    partitions=2) as stack:
        topics = stack.settings.topics
        sent = []
        with Publisher(stack.bootstrap, topics) as publisher:
            for role in INPUT_ROLES:
                topic = getattr(topics, role)
                for value, phrase in poison(ACCEPTED[role]):
                    if role == "clock" and "is invalid" == phrase:
                        continue                      # a tick has no fields to get wrong
                    publisher.send_raw(topic, value, key=MODEL.encode())
                    sent.append((topic, value, phrase))
            unknown = build(ev.DataArrived(uri="file:///x", rows=1, version="v"), "no-such-model",
                            source="tests/poison")
            publisher.publish(unknown)
            sent.append((topics.data, unknown.to_json(), "unknown model"))
            publisher.flush()
            valid = data_event(0, tmp_path / "data")
            publisher.publish(valid)

        stack.observer.wait_for(lambda o: o.of_type(ev.TrainingRequested.TYPE), 30,
                                "the valid event after the poison to be processed")
        letters = stack.observer.wait_for(
            lambda o: len(o.dead_letters) >= len(sent) and o.dead_letters, 30,
            f"{len(sent)} dead letters")

        assert len(letters) == len(sent), "each poison record is dead-lettered exactly once"
        for topic, value, phrase in sent:
            matches = [d for d in letters if d.topic == topic and d.value == value]
            assert len(matches) == 1, (topic, value)
            assert phrase in matches[0].reason, (phrase, matches[0].reason)
            origin = fetch(stack.bootstrap, topic, matches[0].partition, matches[0].offset)
            assert origin is not None and origin.value == value      # it points at the record itself
        request = stack.observer.of_type(ev.TrainingRequested.TYPE)[0]
        assert request.event.causationid == valid.id
