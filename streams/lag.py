"""Consumer lag of a consumer group: end offset minus committed offset, per topic partition.

Why here: lag is the first number an operator looks at ("is the worker keeping up?"), and both
the CLI (`loopline status`) and the worker's /metrics need the same definition. It is measured
the way Kafka's own tools do, from the group's committed offsets and the partitions' end
offsets, with plain kafka-python clients that never join the group (so measuring changes
nothing). A partition the group never committed counts from its beginning offset: everything
on it is still to be read. Blocking: call it from a thread, not an event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from streams.offsets import end_offsets


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None          # next offset the group will read; None: never committed
    end: int                       # next offset to be written
    beginning: int

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None else self.beginning
        return max(0, self.end - max(start, self.beginning))


class LagProbe:
    """Keeps one admin client and one group-less consumer; `measure()` as often as needed."""

    def __init__(self, bootstrap: str, group: str, **config):
        from kafka import KafkaAdminClient, KafkaConsumer

        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, **config)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, **config)

    def committed(self, patience: float = 5.0) -> dict[tuple[str, int], int]:
        """The group's committed offsets. A coordinator that is not there yet (Apache Kafka
        creates `__consumer_offsets` on the first lookup; a coordinator moves in a broker
        restart) is a retriable error: asked again for up to `patience` seconds."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + patience
        while True:
            try:
                offsets = self._group_offsets()
                break
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
                if meta is not None and meta.offset is not None and meta.offset >= 0}

    def _group_offsets(self):
        admin = self.admin
        if hasattr(admin, "list_group_offsets"):                 # kafka-python >= 3
            return admin.list_group_offsets(self.group).get(self.group, {})
        return admin.list_consumer_group_offsets(self.group)     # kafka-python 2.x

    def partitions(self, topics: Iterable[str]) -> list[tuple[str, int]]:
        out = []
        for topic in topics:
            for partition in sorted(self.consumer.partitions_for_topic(topic) or ()):
                out.append((topic, partition))
        return out

    def measure(self, partitions: Iterable[tuple[str, int]]) -> list[PartitionLag]:
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return []
        committed = self.committed()
        ends = end_offsets(self.consumer, tps)
        beginnings = self.consumer.beginning_offsets(tps)
        return [PartitionLag(tp.topic, tp.partition, committed.get((tp.topic, tp.partition)),
                             int(ends.get(tp) or 0), int(beginnings.get(tp) or 0)) for tp in tps]

    def by_topic(self, topics: Iterable[str]) -> dict[str, int]:
        """Lag summed over each topic's partitions."""
        totals: dict[str, int] = {}
        for item in self.measure(self.partitions(topics)):
            totals[item.topic] = totals.get(item.topic, 0) + item.lag
        return totals

    def close(self) -> None:
        for client in (self.consumer, self.admin):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def __enter__(self) -> "LagProbe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
