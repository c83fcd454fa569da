"""Read a model's newest state back from a keyed topic: how the experiment folder restores.

The experiment folder (`agents.experiments`) publishes each model's state to the experiment
topic and commits feedback only up to a published state; after a crash or a rebalance it reads
the newest state per model back from the same partition number. The topic keeps every update
(retention, no compaction on the embedded broker), so it is read backwards in growing chunks
from its end: the last few records when every model has a state, the whole retained partition
only for a model that never had one. Blocking (librdkafka): called in a thread.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Protocol

log = logging.getLogger("loopline.experiments")


class StateReader(Protocol):
    def newest(self, partition: int, models: set[str]) -> dict[str, bytes]:
        """model → value of its newest record on this partition of the experiment topic
        (blocking: called in a thread)."""


class KafkaStateReader:
    """Reads the experiment topic backwards in growing chunks from its end, until every wanted
    model's newest state is found or the partition's start is reached: a restore costs the last
    few records when every model has a state, the whole retained partition when one never had."""

    def __init__(self, bootstrap: str, topic: str, group: str, config: Mapping[str, object] | None = None,
                 chunk: int = 1000, timeout: float = 30.0):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.config, self.chunk, self.timeout = dict(config or {}), chunk, timeout

    def newest(self, partition: int, models: set[str]) -> dict[str, bytes]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False, "enable.auto.offset.store": False,
                             **self.config}, logger=log)
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                       timeout=self.timeout)
            found: dict[str, bytes] = {}
            end, chunk = high, self.chunk
            while end > low and not models <= found.keys():
                start = max(low, end - chunk)
                window: dict[str, bytes] = {}
                consumer.assign([TopicPartition(self.topic, partition, start)])
                position, deadline = start, time.monotonic() + self.timeout
                while position < end:
                    messages = consumer.consume(min(end - position, 10_000), 0.5)
                    if not messages and time.monotonic() > deadline:
                        # a gap in the offsets (or a broker that stopped answering): restore
                        # from what was read rather than fail every batch from now on
                        log.warning("%s[%d]: nothing read from offset %d of %d in %gs; restoring "
                                    "from what was read", self.topic, partition, position, end,
                                    self.timeout)
                        break
                    for msg in messages:
                        if msg.error() is None and msg.offset() < end and msg.key() is not None:
                            window[msg.key().decode()] = msg.value()
                        position = max(position, msg.offset() + 1)
                for model, value in window.items():
                    found.setdefault(model, value)       # a newer chunk's state wins
                end, chunk = start, chunk * 4
            return found
        finally:
            consumer.close()
