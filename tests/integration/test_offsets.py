"""Readers outside a group see every record, also the tail of a multi-record producer batch.

On Tansu a ListOffsets answer stops at the last batch's base offset + 1 (see streams.offsets);
these tests send one batch of several records and fail if a reader trusts that answer alone.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from loopline.snapshot import read_records
from streams.lag import LagProbe
from streams.offsets import end_offsets


def send_batch(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """`values` sent without waiting in between: one producer batch on partition 0."""
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
