"""The decision record as `loopline status` reads it: envelopes at once, event data on demand.

Why: `snapshot.read_events` validates every event in full (the CloudEvent envelope and the
typed data, through pydantic): ~0.25 ms an event, so 5 s of CPU for the 20,000 events of
10,000 models that each had one data batch (bench.scale). Status needs every event's envelope
(subject, type, time: to group, order and count) but the data of only a few: the newest of each
kind per model it shows, the request and start of a training in flight, a live rollout's.
So: a cheap look at the envelope (one `json.loads`, or the `ce_` headers in binary mode) for
every record, and the full `streams.codec.decode` of an event only when something reads its
data; an event that fails it then is passed over, as `decode_all` would have dropped it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Iterable

from streams.codec import DecodeError, decode, headers_dict

_UNSET = object()


class LazySeen:
    """A record with its envelope's subject, type, id and time; `decoded` (hence `event` and
    `data`) on first use, None when the event does not decode."""

    __slots__ = ("record", "subject", "type", "id", "time", "timestamp", "_decoded")

    def __init__(self, record, head: dict[str, Any]):
        self.record = record
        self.subject, self.type, self.id, self.time = (str(head.get(k) or "") for k in ("subject", "type", "id", "time"))
        self.timestamp = _timestamp(self.time, record.timestamp)
        self._decoded = _UNSET

    @property
    def decoded(self):
        if self._decoded is _UNSET:
            try:
                self._decoded = decode(self.record.value, self.record.headers, max_bytes=1 << 30)
            except DecodeError:
                self._decoded = None
        return self._decoded

    @property
    def event(self):
        return self.decoded.event

    @property
    def data(self):
        return self.decoded.data


def _timestamp(time: str, fallback: float) -> float:
    try:
        return datetime.fromisoformat(time).timestamp()
    except ValueError:
        return fallback


def head_of(record) -> dict[str, Any] | None:
    """The envelope attributes of a record (structured or binary mode), or None if it has none."""
    if record.value is None:
        return None
    hdrs = headers_dict(record.headers)
    if "ce_id" in hdrs or "ce_specversion" in hdrs:
        return {k: hdrs.get(f"ce_{k}", b"").decode(errors="replace") for k in ("subject", "type", "id", "time")}
    try:
        doc = json.loads(record.value)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("type") and doc.get("id") else None


def lazy_all(records: Iterable) -> list[LazySeen]:
    """Every record with an envelope, oldest first by event time (as `snapshot.decode_all`)."""
    seen = [LazySeen(r, head) for r in records if (head := head_of(r)) is not None]
    seen.sort(key=lambda s: (s.timestamp, s.record.timestamp))
    return seen


def decodable(events: Iterable[LazySeen]) -> list[LazySeen]:
    """Those that decode in full (each decoded now)."""
    return [s for s in events if s.decoded is not None]


def read_lazy_events(bootstrap: str, topics, **config) -> list[LazySeen]:
    """The loop's decision topics (what `snapshot.read_events` reads), envelopes only."""
    from loopline.commands.snapshot import NOT_DECISIONS, read_records

    names = [name for name, spec in topics.all().items() if spec.role not in NOT_DECISIONS]
    return lazy_all(read_records(bootstrap, names, **config))


# --- the reads, through librdkafka ----------------------------------------------------------------
# kafka-python parses record batches in Python: 3.5 s of CPU for the 20,000 decision records of
# 10,000 models, 1.3 s for their 10,000 changelog records (bench.scale, 2 cores under load).
# confluent-kafka (librdkafka, C; already the batch consumer's client) reads the same in a few
# tens of milliseconds. Same snapshot semantics as `snapshot.read_records`: every partition from
# its start up to the end offset taken first, no consumer group joined, nothing committed.

def read_topics(bootstrap: str, topics: list[str], config: dict | None = None,
                timeout: float = 30.0) -> dict[str, list]:
    """{topic: its records (snapshot.Record), in (partition, offset) order} up to the current ends;
    a topic that does not exist reads as []."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from loopline.commands.snapshot import Record

    out: dict[str, list] = {topic: [] for topic in topics}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"loopline-status-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "enable.partition.eof": False,
                         # as kafka-python reads: the embedded broker's last stable offset lags its end
                         "isolation.level": "read_uncommitted", **(config or {})})
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(timeout=timeout)
        ends: dict[tuple[str, int], int] = {}
        assigned = []
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high > low:
                    ends[(topic, partition)] = high
                    assigned.append(TopicPartition(topic, partition, low))
        if not assigned:
            return out
        consumer.assign(assigned)
        # The listed end is not the end on the embedded broker (streams.offsets: ListOffsets answers
        # the last batch's base offset + 1); a fetch's high watermark is. So each partition's end is
        # the larger of the two, the watermark taken from its first fetch (then fixed: a snapshot).
        fixed: set[tuple[str, int]] = set()
        position = {tp: tpo.offset for tpo in assigned for tp in [(tpo.topic, tpo.partition)]}
        by_tp: dict[tuple[str, int], list] = {tp: [] for tp in ends}
        while len(fixed) < len(ends) or any(position[tp] < ends[tp] for tp in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {len(ends)} partitions took over {timeout}s")
            messages = consumer.consume(10_000, 0.2)
            if not messages:               # past a gap (compaction, a transaction marker): where it is
                for tpo in consumer.position([TopicPartition(*tp) for tp in ends]):
                    if tpo.offset >= 0:
                        position[(tpo.topic, tpo.partition)] = max(position[(tpo.topic, tpo.partition)], tpo.offset)
            for tp in set(ends) - fixed:
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                if high is not None and high >= 0:
                    ends[tp] = max(ends[tp], high)
                    fixed.add(tp)
            for msg in messages:
                if msg.error() is not None:
                    continue
                tp, offset = (msg.topic(), msg.partition()), msg.offset()
                position[tp] = max(position.get(tp, 0), offset + 1)
                if tp not in ends or offset >= ends[tp]:
                    continue
                _, ms = msg.timestamp()
                by_tp[tp].append(Record(tp[0], tp[1], offset, (ms or 0) / 1000.0, msg.key(), msg.value(),
                                        tuple((k, bytes(v or b"")) for k, v in (msg.headers() or ()))))
        for (topic, _), records in sorted(by_tp.items()):
            out[topic].extend(records)
        return out
    finally:
        consumer.close()


def dead_letters_of(records) -> list:
    """`snapshot.read_dead_letters` of records already read."""
    from streams.deadletter import DeadLetter

    out = []
    for record in records:
        try:
            out.append((record, DeadLetter.from_record(record.key, record.value, record.headers)))
        except ValueError:
            continue
    out.sort(key=lambda item: (item[0].timestamp, item[0].partition, item[0].offset))
    return out
