"""The feedback consumer reads a backlog without pauses, even when its queue keeps filling up.

librdkafka prefetches into a local queue and, once the queue is over its limit, waits
`fetch.queue.backoff.ms` before it fetches again: 1 s by default. A handler slower than the
fetcher fills the queue, and each time it did, the queue then ran dry and nothing was read
for the rest of that second: in the throughput bench two such pauses per 300k records cost a
third of the time (108k records/s where the same work reads 180k/s without them).
`agents.batch` sets the wait to 10 ms. Here the queue is made small (256 KB, ~580 records,
filled by four 64 KB fetches), so it fills again and again: with the 1 s wait, 20,000 records
took 25 s here; with 10 ms, 0.6 s.
"""

from __future__ import annotations

import asyncio
import time

from agents.batch import BatchConsumer

RECORDS = 20_000
VALUE = b"x" * 440              # the size of a FeedbackReceived event
SMALL_QUEUE = {"queued.max.messages.kbytes": 256, "queued.min.messages": 100,
               "fetch.max.bytes": 64 << 10, "max.partition.fetch.bytes": 64 << 10,
               "message.max.bytes": 64 << 10}       # librdkafka: at most fetch.max.bytes


def load(bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 16 << 10})
    for i in range(RECORDS):
        producer.produce(topic, VALUE, key=str(i).encode(), partition=0)
        if i % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


class Counter:
    def __init__(self):
        self.seen, self.first, self.last = 0, None, None
        self.done = asyncio.Event()

    def revoked(self, partitions):
        pass

    async def process(self, batch, now, caught_up):
        n = sum(len(records) for records in batch.values())
        if n:
            self.first = self.first or time.monotonic()
            self.last = time.monotonic()
        self.seen += n
        if self.seen >= RECORDS:
            self.done.set()
        return {tp: records[-1].offset + 1 for tp, records in batch.items()}


def test_a_backlog_is_read_without_pausing_each_time_the_queue_fills(bootstrap, prefix):
    topic = f"{prefix}.feedback"
    load(bootstrap, topic)
    handler = Counter()

    async def consume():
        consumer = BatchConsumer(bootstrap=bootstrap, group=f"{prefix}-g", topics=[topic],
                                 handler=handler, rebalance_timeout=2.0, session_timeout=6.0,
                                 config=SMALL_QUEUE)
        task = asyncio.ensure_future(consumer.run())
        done = asyncio.ensure_future(handler.done.wait())
        await asyncio.wait([task, done], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()                   # the consumer failed: say why
        task.cancel()
        done.cancel()
        await asyncio.gather(task, done, return_exceptions=True)

    asyncio.run(consume())
    assert handler.seen == RECORDS
    # 25 s with librdkafka's default wait, 0.6 s with ours: a wide margin either way.
    assert handler.last - handler.first < 12, f"{handler.last - handler.first:.1f} s for {RECORDS} records"
