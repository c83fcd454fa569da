"""The bus contract on real brokers: the session broker, and Apache Kafka in a container where
Docker exists (skipped with the reason where it does not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kafka import KafkaConsumer

from devstack.observe import Observer
from streams import events as ev
from streams.admin import ensure_topics
from streams.codec import build, decode
from streams.envelope import CloudEvent
from streams.publisher import Publisher
from streams.topics import Topics
from tests.conftest import docker_kafka

pytestmark = pytest.mark.every_broker


def roundtrip(bootstrap: str, topics: Topics) -> None:
    ensure_topics(bootstrap, topics)
    sent = build(ev.DataArrived(uri="s3://bucket/a.parquet", rows=3, version="v1"), "m", source="t")
    binary = build(ev.DataArrived(uri="gs://b/c.parquet", rows=4, version="v2"), "m", source="t")
    with Publisher(bootstrap, topics) as publisher:
        publisher.publish(sent)
        # binary mode: attributes in ce_* headers, the value is the data alone
        publisher.send_raw(topics.data, json.dumps(dict(binary.data)).encode(), key=b"m",
                           headers=binary.to_headers()).get(10)
    consumer = KafkaConsumer(topics.data, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, group_id=None)
    got = [decode(r.value, r.headers) for _, r in zip(range(2), consumer)]
    consumer.close()
    assert sorted(d.event.id for d in got) == sorted([sent.id, binary.id])
    assert {d.data.uri for d in got} == {"s3://bucket/a.parquet", "gs://b/c.parquet"}
    assert all(d.event.subject == "m" for d in got)


def test_session_broker_roundtrip(bootstrap, prefix):
    roundtrip(bootstrap, Topics(prefix, 2))


@pytest.mark.docker
def test_apache_kafka_container_roundtrip(prefix):
    with docker_kafka() as kafka:
        roundtrip(kafka.get_bootstrap_server(), Topics(prefix, 2))


def test_cli_publishes_a_data_arrival_event(bootstrap, prefix):
    topics = Topics(prefix, 2)
    ensure_topics(bootstrap, topics)
    env = {**os.environ, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_TOPIC_PREFIX": prefix,
           "LOOPLINE_PARTITIONS": "2"}
    out = subprocess.run([sys.executable, "-m", "loopline.cli", "publish", "data", "--model", "clf",
                          "--uri", "file:///data/b1.parquet", "--rows", "1200", "--version", "b1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with Observer(bootstrap, topics) as observer:
        arrived = observer.wait_for(lambda o: o.of_type(ev.DataArrived.TYPE), 15, "the event")[0]
    assert arrived.event.id in out.stdout
    assert (arrived.event.subject, arrived.data.rows, arrived.data.version) == ("clf", 1200, "b1")
    assert isinstance(arrived.event, CloudEvent) and arrived.event.source.startswith("loopline/cli")
