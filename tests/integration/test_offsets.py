"""Readers outside a group see every record, also the tail of a multi-record producer batch.

On Tansu a ListOffsets answer stops at the last batch's base offset + 1 (see streams.offsets);
these tests send one batch of several records and fail if a reader trusts that answer alone.
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


def test_end_offsets_and_snapshot_reads_include_the_tail_of_a_batch(bootstrap, prefix):
    topic, tp = f"{prefix}.batched", TopicPartition(f"{prefix}.batched", 0)
    send_batch(bootstrap, topic, [b"one"])
    send_batch(bootstrap, topic, [b"two", b"three", b"four"])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
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


def test_faust_table_recovery_reads_to_the_tail_of_a_batch(bootstrap, prefix):
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
        return await fetched_end_offsets(bootstrap, {changelog: listed[changelog], empty: listed[empty]})

    assert asyncio.run(listed_then_fetched()) == {changelog: 4, empty: 0}


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
