"""The feedback topic's batch consumer on a real broker: a failed batch is replayed, and the
group's commit is the position its handler returns."""

from __future__ import annotations

import asyncio

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from agents.batch import BatchConsumer


def test_the_batch_consumer_replays_a_failed_batch_and_commits_what_the_handler_says(bootstrap, prefix):
    """Real broker: a handler that fails once sees the same records again; the commit is the
    handler's position, so a new consumer of the group starts there."""
    topic = f"{prefix}.feedback"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(10):
        producer.send(topic, str(i).encode(), partition=0)
    producer.flush()
    producer.close()

    class Handler:
        def __init__(self):
            self.calls, self.seen, self.done, self.revocations = 0, [], asyncio.Event(), []

        def revoked(self, partitions):      # after the failure, and when the consumer closes
            self.revocations.append(list(partitions))

        async def process(self, batch, now, caught_up):
            records = [r for rs in batch.values() for r in rs]
            if records:
                self.calls += 1
                if self.calls == 1:
                    raise RuntimeError("first batch fails")
            self.seen += [int(r.value) for r in records]
            if len(self.seen) >= 10:
                self.done.set()
            return {tp: rs[-1].offset + 1 - 3 for tp, rs in batch.items()}   # hold 3 back

    async def consume(handler, group):
        consumer = BatchConsumer(bootstrap=bootstrap, group=group, topics=[topic], handler=handler,
                                 rebalance_timeout=2.0, session_timeout=6.0)
        task = asyncio.ensure_future(consumer.run())
        await asyncio.wait_for(handler.done.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    first = Handler()
    asyncio.run(consume(first, f"{prefix}-g"))
    assert first.calls >= 2 and sorted(first.seen) == list(range(10))    # all of them, once
    assert [(topic, 0)] in first.revocations      # the failed batch's partition state dropped
    second = Handler()
    second.calls = 1                                       # no failure this time
    second.done = None

    async def resume():
        second.done = asyncio.Event()
        second.seen = []
        original = second.process

        async def process(batch, now, caught_up):
            result = await original(batch, now, caught_up)
            if second.seen:
                second.done.set()
            return result

        second.process = process
        await consume(second, f"{prefix}-g")

    asyncio.run(resume())
    assert second.seen[0] == 7                             # the commit held the last 3 back
