"""Readers outside a group see every record, also the tail of a multi-record producer batch.

On Tansu a ListOffsets answer stops at the last batch's base offset + 1 (see streams.offsets);
these tests send one batch of several records and fail if a reader trusts that answer alone.
They also assert the broker's raw ListOffsets answer, per broker (`RAW_END`): what the
workaround (`streams.offsets.end_offsets`, `agents.transport.fetched_end_offsets`) corrects.
Apache Kafka answers right, so there the workaround is shown unnecessary (and harmless: the
corrected ends are the same); Tansu answers short, so it is needed there.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.types import TP
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from agents.transport import ConsumerThread, fetched_end_offsets
from loopline.commands.snapshot import read_records
from streams.lag import LagProbe
from streams.offsets import end_offsets
from tests.waiting import wait_until

pytestmark = pytest.mark.every_broker

# The raw ListOffsets end of a partition holding a one-record batch, then a three-record batch
# (4 records), by broker kind (tests/conftest.py's --broker choices). Tansu answers the last
# batch's base offset + 1 = 2; Apache Kafka (its jars, or testcontainers') the true end, 4.
RAW_END = {"embedded": 2, "kafka": 4, "docker": 4}


@pytest.fixture
def raw_end(request) -> int:
    """The raw ListOffsets end this test's broker gives after `one` + `two, three, four`."""
    kind = request.node.callspec.params["bootstrap"]
    if kind not in RAW_END:
        pytest.skip(f"no known ListOffsets behaviour for broker {kind!r} (a HOST:PORT broker)")
    return RAW_END[kind]


def create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    try:   # Apache Kafka's brokers learn of a new topic from the controller a moment later
        wait_until(lambda: all(m["partitions"] for m in admin.describe_topics([topic])),
                   timeout=10, what=f"{topic} in the broker's metadata")
    finally:
        admin.close()


def send_batch(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """`values` sent without waiting in between: one producer batch on partition 0 of `topic`,
    created first (with one partition) if it is new: no broker here auto-creates topics."""
    create_topic(bootstrap, topic)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
        await producer.start()
        try:
            sent = [await producer.send(topic, value, partition=0) for value in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
    asyncio.run(run())


def test_end_offsets_and_snapshot_reads_include_the_tail_of_a_batch(bootstrap, prefix, raw_end):
    topic, tp = f"{prefix}.batched", TopicPartition(f"{prefix}.batched", 0)
    send_batch(bootstrap, topic, [b"one"])
    send_batch(bootstrap, topic, [b"two", b"three", b"four"])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        # The broker's own answer, uncorrected: right on Apache Kafka, 2 short on Tansu.
        assert consumer.end_offsets([tp]) == {tp: raw_end}
        assert end_offsets(consumer, [tp]) == {tp: 4}
    finally:
        consumer.close()
    assert [r.value for r in read_records(bootstrap, [topic])] == [b"one", b"two", b"three", b"four"]


def test_lag_probe_sees_a_new_batch_on_its_second_measurement(bootstrap, prefix):
    topic = f"{prefix}.lagged"
    send_batch(bootstrap, topic, [b"a"])
    with LagProbe(bootstrap, f"{prefix}-nobody") as probe:
        assert probe.by_topic([topic]) == {topic: 1}
        send_batch(bootstrap, topic, [b"b", b"c", b"d", b"e"])
        assert probe.by_topic([topic]) == {topic: 5}      # a reused probe measures afresh


def test_faust_table_recovery_reads_to_the_tail_of_a_batch(bootstrap, prefix, raw_end):
    """The worker's ConsumerThread takes a changelog's end from `fetched_end_offsets`: a
    worker taking over a partition must restore the newest table writes, also when the last
    producer batch held several (Tansu's ListOffsets stops short of them)."""
    changelog, empty = TP(f"{prefix}.changelog", 0), TP(f"{prefix}.empty", 0)
    send_batch(bootstrap, changelog.topic, [b"one"])
    send_batch(bootstrap, changelog.topic, [b"two", b"three", b"four"])
    send_batch(bootstrap, empty.topic, [])

    async def listed_then_fetched():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)     # what Faust asks
        await consumer.start()
        try:
            listed = await consumer.end_offsets([changelog, empty])
        finally:
            await consumer.stop()
        listed = {changelog: listed[changelog], empty: listed[empty]}
        return listed, await fetched_end_offsets(bootstrap, listed)

    listed, fetched = asyncio.run(listed_then_fetched())
    assert listed == {changelog: raw_end, empty: 0}      # aiokafka's raw ListOffsets, as Faust gets it
    assert fetched == {changelog: 4, empty: 0}


def test_seeking_back_to_committed_rereads_a_partition_with_nothing_committed(bootstrap, prefix):
    """Faust seeks back to the committed offsets to read again what a rebalance kept it from
    handing out; aiokafka alone leaves a partition with nothing committed where it is, and
    those records were skipped for good."""
    tp = TopicPartition(f"{prefix}.uncommitted", 0)
    send_batch(bootstrap, tp.topic, [b"a", b"b", b"c"])

    async def read_all_then_seek_back():
        from aiokafka import TopicPartition as AioTP
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{prefix}-g",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            aio = AioTP(tp.topic, tp.partition)
            consumer.assign([aio])
            while await consumer.position(aio) < 3:
                await consumer.getmany(aio, timeout_ms=200)
            thread = SimpleNamespace(_ensure_consumer=lambda: consumer)
            committed = await ConsumerThread._seek_to_committed(thread)
            return committed[aio], await consumer.position(aio)
        finally:
            await consumer.stop()

    assert asyncio.run(read_all_then_seek_back()) == (None, 0)
