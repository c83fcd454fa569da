"""A batch consumer inside the Faust worker, for the high-volume topics (feedback).

Why not a Faust agent: Faust's per-message bookkeeping caps an agent at ~16k records/s on this
machine, with Records, raw bytes or `stream.take()` alike. Why librdkafka (confluent-kafka) and
not aiokafka: aiokafka builds every record in Python (~8 µs each here, as much as decoding it),
librdkafka fetches and unpacks in its own C threads. Here (2026-11-30, `bench.throughput`) the
whole windows path in the worker read 204k records/s, where bare aiokafka plus json.loads read
138k and bare librdkafka plus json.loads 213k.
Control events (a few per second, each a decision) stay in Faust agents; telemetry (labelled
predictions, thousands per second, only counted) goes through this: a consumer in its own
consumer group, run as a task of the same worker, that hands a whole batch (up to
`max_records`) to a handler and commits what the handler says is safe, after the handler has
published its results.

librdkafka's calls block, so they run on one thread of their own (`consume` waits there, the
event loop does not); rebalance callbacks fire inside `consume`, on that thread, while the loop
is awaiting it, so they never race the handler.

The handler decides the commit position per partition (see `BatchHandler.process`): the
windows handler commits only up to the first record of its oldest open window, so a crash
replays what an in-memory window had counted instead of losing it. Rebalances drop the
handler's state for revoked partitions (their new owner replays from the committed offset).
An exception in the handler is logged and the batch is retried from the last commit by
seeking back, after a back-off: at-least-once, and a bug never kills the worker.

A handler with a `wants(tp)` method may let partitions rest: after each batch, an assigned
partition it does not want is paused (librdkafka stops fetching it, so its records cost this
process nothing), and one it wants again is resumed from the offset after the last record it was
given. Nothing is skipped: a rested partition is read from where it stopped. The experiment folder
rests the feedback partitions where no experiment runs: reading all feedback a second time, in
the worker that counts it, halved the feedback path (151k → 74k records/s, `bench.throughput`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Protocol

log = logging.getLogger("loopline.batch")

TP = tuple[str, int]                          # (topic, partition): the key of a batch


class Record:
    """One consumed record, with the attributes the handlers and the dead-letter writer read."""
    __slots__ = ("topic", "partition", "offset", "key", "value", "headers")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: list | None):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.headers = key, value, headers or []


class BatchHandler(Protocol):
    async def process(self, batch: Mapping[TP, list[Record]], now: float,
                      caught_up: Mapping[TP, bool]) -> Mapping[TP, int]:
        """Handle records (by (topic, partition)); return {tp: offset safe to commit}."""

    def revoked(self, partitions: list[TP]) -> None:
        """These partitions went to another worker: forget their state."""

    # optional: def wants(self, tp: TP) -> bool -- False lets the partition rest (paused)


class BatchConsumer:
    def __init__(self, *, bootstrap: str, group: str, topics: list[str], handler: BatchHandler,
                 fetch_max_wait_ms: int = 10, max_records: int = 20_000, idle_ms: int = 200,
                 rebalance_timeout: float = 4.0, session_timeout: float = 10.0,
                 heartbeat_interval: float = 1.0, client_id: str = "loopline-batch",
                 config: Mapping[str, object] | None = None):
        self.bootstrap, self.group, self.topics, self.handler = bootstrap, group, topics, handler
        self.config = dict(config or {})      # librdkafka properties over ours (security, queue)
        self.fetch_max_wait_ms, self.max_records, self.idle_ms = fetch_max_wait_ms, max_records, idle_ms
        self.timeouts = (rebalance_timeout, session_timeout, heartbeat_interval)
        self.client_id = client_id
        self.records = 0                      # consumed, for /metrics and the status page

    def _new_consumer(self):
        from confluent_kafka import Consumer

        rebalance, session, heartbeat = self.timeouts
        return Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "client.id": self.client_id, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.fetch_max_wait_ms, "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 8 << 20, "queued.max.messages.kbytes": 32 << 10,
            # Once its queue is full, librdkafka waits this long before fetching again; its
            # default (1 s) stalled a backlog twice per 300k records, a third of the time.
            "fetch.queue.backoff.ms": 10,
            # librdkafka sends max.poll.interval.ms as the JoinGroup's rebalance timeout, and
            # a broker may hold a join that long (Tansu does): it is the rebalance timeout.
            # The loop calls consume() between batches, far more often than that.
            "max.poll.interval.ms": max(int(rebalance * 1000), int(session * 1000)),
            "session.timeout.ms": int(session * 1000),
            "heartbeat.interval.ms": int(heartbeat * 1000), **self.config}, logger=log)

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        handler, loop = self.handler, asyncio.get_running_loop()
        thread = ThreadPoolExecutor(1, thread_name_prefix=self.client_id)
        committed: dict[TP, int] = {}
        positions: dict[TP, int] = {}       # next offset after the newest record seen
        assignment: set[TP] = set()
        paused: set[TP] = set()
        wants = getattr(handler, "wants", None)

        def call(fn, *args):
            return loop.run_in_executor(thread, fn, *args)

        def assigned(_, partitions):        # on the consumer's thread, inside consume()
            assignment.update((p.topic, p.partition) for p in partitions)

        def revoked(_, partitions):
            gone = [(p.topic, p.partition) for p in partitions]
            handler.revoked(gone)
            for tp in gone:
                assignment.discard(tp)
                positions.pop(tp, None)
                committed.pop(tp, None)
                paused.discard(tp)                # a partition assigned again starts unpaused

        consumer = await call(self._new_consumer)
        consumer.subscribe(self.topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        backoff = 0.5
        try:
            while True:
                messages = await call(consumer.consume, self.max_records, self.idle_ms / 1000)
                batch = self._batch(messages)
                for tp, records in batch.items():
                    positions[tp] = records[-1].offset + 1
                caught_up = {}
                for tp in assignment:
                    _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                    position = positions.get(tp)
                    caught_up[tp] = high < 0 or position is None or position >= high
                try:
                    safe = await handler.process(batch, time.time(), caught_up)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - never kill the worker; replay the batch
                    log.exception("batch of %d records failed; replaying from the last commit",
                                  sum(len(r) for r in batch.values()))
                    handler.revoked(list(batch))
                    again = [tp for tp in batch if tp in assignment]
                    for tp in again:
                        positions.pop(tp, None)
                    if again:
                        stored = await call(consumer.committed, [TopicPartition(*tp) for tp in again])
                        for tp in stored:      # nothing committed yet (negative): from the start
                            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                            await call(consumer.seek, TopicPartition(tp.topic, tp.partition, offset))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
                self.records += sum(len(r) for r in batch.values())
                offsets = {tp: off for tp, off in safe.items()
                           if tp in assignment and committed.get(tp) != off}
                if offsets:
                    try:
                        # shielded: a worker stopping now still commits what was handled
                        # (a cancelled executor call would otherwise never run)
                        await asyncio.shield(call(lambda: consumer.commit(
                            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                            asynchronous=False)))
                        committed.update(offsets)
                    except KafkaException as exc:  # a rebalance in between: replayed
                        log.warning("commit of %s failed (%s): the next owner replays", offsets, exc)
                if wants is not None:       # asked here, on the loop, where the handler's state lives
                    rest = [tp for tp in assignment if tp not in paused and not wants(tp)]
                    wake = [tp for tp in paused if tp in assignment and wants(tp)]
                    if rest or wake:
                        await call(self._rest, consumer, rest, wake, positions)
                        paused.update(rest)
                        paused.difference_update(wake)
        finally:
            await asyncio.shield(call(consumer.close))
            thread.shutdown(wait=False)

    @staticmethod
    def _rest(consumer, rest: list[TP], wake: list[TP], positions: dict[TP, int]) -> None:
        """Pause `rest`, resume `wake` from the offset after the last record handed over (consumer thread)."""
        from confluent_kafka import TopicPartition

        if rest:
            consumer.pause([TopicPartition(*tp) for tp in rest])
        if wake:
            consumer.resume([TopicPartition(*tp) for tp in wake])
            for tp in wake:
                if tp in positions:       # records fetched before the pause were dropped
                    consumer.seek(TopicPartition(tp[0], tp[1], positions[tp]))

    @staticmethod
    def _batch(messages: list) -> dict[TP, list[Record]]:
        """librdkafka's messages by partition, errors (end of partition and such) logged."""
        batch: dict[TP, list[Record]] = {}
        for m in messages:
            if m.error() is not None:
                log.warning("consumer: %s", m.error())
                continue
            tp = (m.topic(), m.partition())
            records = batch.get(tp)
            if records is None:
                records = batch[tp] = []
            records.append(Record(tp[0], tp[1], m.offset(), m.key(), m.value(), m.headers()))
        return batch
