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


def test_a_partition_the_handler_does_not_want_rests_and_is_read_from_where_it_stopped(bootstrap, prefix):
    """Real broker: records of a rested (paused) partition reach the handler only once it wants
    them again, and then every one of them, from where it stopped; a topic it wants flows on."""
    data, control = f"{prefix}.feedback", f"{prefix}.rollout"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(data, 1, 1), NewTopic(control, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)

    def send(topic: str, *values: int) -> None:
        for value in values:
            producer.send(topic, str(value).encode(), partition=0)
        producer.flush()

    send(data, 0, 1, 2)

    class Handler:
        def __init__(self):
            self.awake, self.data, self.control = False, [], []
            self.rested, self.done = asyncio.Event(), asyncio.Event()

        def revoked(self, partitions):
            pass

        def wants(self, tp):     # like the experiment folder: wanted until it knows (its first records)
            return tp[0] != data or self.awake or not self.data

        async def process(self, batch, now, caught_up):
            for (topic, _), records in batch.items():
                values = [int(r.value) for r in records]
                (self.data if topic == data else self.control).extend(values)
                if topic == control and 99 in values:
                    self.awake = True
            if self.data and not self.awake:
                self.rested.set()
            if len(self.data) >= 8:
                self.done.set()
            return {tp: rs[-1].offset + 1 for tp, rs in batch.items()}

    async def scenario(handler):
        consumer = BatchConsumer(bootstrap=bootstrap, group=f"{prefix}-rest", topics=[data, control],
                                 handler=handler, rebalance_timeout=2.0, session_timeout=6.0)
        task = asyncio.ensure_future(consumer.run())
        await asyncio.wait_for(handler.rested.wait(), 30)        # the first records, then it rests
        await asyncio.to_thread(send, data, 3, 4, 5)
        await asyncio.to_thread(send, control, 7)
        await asyncio.wait_for(_until(lambda: 7 in handler.control), 30)
        assert handler.data == [0, 1, 2], "a rested partition was read"
        await asyncio.to_thread(send, data, 6, 7)
        await asyncio.to_thread(send, control, 99)               # wake it
        await asyncio.wait_for(handler.done.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    handler = Handler()
    asyncio.run(scenario(handler))
    producer.close()
    assert handler.data == list(range(8))                          # each once, in order, none skipped


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
