"""A batch consumer inside the Faust worker, for the high-volume topics (feedback).

Why not a Faust agent: Faust's per-message bookkeeping caps an agent at ~16k records/s on this
machine, with Records, raw bytes or `stream.take()` alike, while a plain aiokafka consumer parses
~300k/s. Control events (a few per second, each a decision) stay in Faust agents; telemetry
(labelled predictions, thousands per second, only counted) goes through this: a plain
aiokafka consumer in its own consumer group, run as a task of the same worker, that hands a
whole `getmany` batch (up to `max_records`) to a handler and commits what the handler says is
safe, after the handler has published its results.

The handler decides the commit position per partition (see `BatchHandler.process`): the
windows handler commits only up to the first record of its oldest open window, so a crash
replays what an in-memory window had counted instead of losing it. Rebalances drop the
handler's state for revoked partitions (their new owner replays from the committed offset).
An exception in the handler is logged and the batch is retried from the last commit by
seeking back, after a back-off: at-least-once, and a bug never kills the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping, Protocol

log = logging.getLogger("loopline.batch")


class BatchHandler(Protocol):
    async def process(self, batch: Mapping[Any, list], now: float,
                      caught_up: Mapping[Any, bool]) -> Mapping[Any, int]:
        """Handle records (by TopicPartition); return {tp: offset safe to commit}."""

    def revoked(self, partitions) -> None:
        """These partitions went to another worker: forget their state."""


class BatchConsumer:
    def __init__(self, *, bootstrap: str, group: str, topics: list[str], handler: BatchHandler,
                 fetch_max_wait_ms: int = 10, max_records: int = 20_000, idle_ms: int = 200,
                 rebalance_timeout: float = 4.0, session_timeout: float = 10.0,
                 heartbeat_interval: float = 1.0, client_id: str = "loopline-batch"):
        self.bootstrap, self.group, self.topics, self.handler = bootstrap, group, topics, handler
        self.fetch_max_wait_ms, self.max_records, self.idle_ms = fetch_max_wait_ms, max_records, idle_ms
        self.timeouts = (rebalance_timeout, session_timeout, heartbeat_interval)
        self.client_id = client_id
        self.records = 0                      # consumed, for /metrics and the status page
        self.consumer = None

    def _new_consumer(self):
        from aiokafka import AIOKafkaConsumer

        rebalance, session, heartbeat = self.timeouts
        return AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, group_id=self.group,
            client_id=self.client_id, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms, max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20, rebalance_timeout_ms=int(rebalance * 1000),
            session_timeout_ms=int(session * 1000), heartbeat_interval_ms=int(heartbeat * 1000),
            max_poll_interval_ms=300_000)

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping)."""
        from aiokafka import ConsumerRebalanceListener

        handler = self.handler
        committed: dict[Any, int] = {}
        positions: dict[Any, int] = {}      # next offset after the newest record seen

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                handler.revoked(revoked)
                for tp in revoked:
                    positions.pop(tp, None)
                    committed.pop(tp, None)

            async def on_partitions_assigned(self, assigned):
                pass

        consumer = self.consumer = self._new_consumer()
        consumer.subscribe(self.topics, listener=Listener())
        await consumer.start()
        backoff = 0.5
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=self.idle_ms, max_records=self.max_records)
                assignment = consumer.assignment()
                for tp, records in batch.items():
                    positions[tp] = records[-1].offset + 1
                caught_up = {}
                for tp in assignment:
                    high, position = consumer.highwater(tp), positions.get(tp)
                    caught_up[tp] = high is None or position is None or position >= high
                try:
                    safe = await handler.process(batch, time.time(), caught_up)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - never kill the worker; replay the batch
                    log.exception("batch of %d records failed; replaying from the last commit",
                                  sum(len(r) for r in batch.values()))
                    handler.revoked(list(batch))
                    for tp in batch:
                        if tp in assignment:
                            positions.pop(tp, None)
                            offset = await consumer.committed(tp)
                            if offset is None:     # nothing committed yet: from the start
                                await consumer.seek_to_beginning(tp)
                            else:
                                consumer.seek(tp, offset)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
                self.records += sum(len(r) for r in batch.values())
                offsets = {tp: off for tp, off in safe.items()
                           if tp in consumer.assignment() and committed.get(tp) != off}
                if offsets:
                    try:
                        await consumer.commit(offsets)
                        committed.update(offsets)
                    except Exception as exc:  # noqa: BLE001 - a rebalance in between: replayed
                        log.warning("commit of %s failed (%s): the next owner replays", offsets, exc)
        finally:
            await consumer.stop()
