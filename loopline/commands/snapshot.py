"""One-shot reads of the bus from outside the worker: what `status`, `lineage`, `events` and `dlq` show.

Why: an operator's questions ("what did the system do, and why?") are answered from the record,
and the record is the topics. This reads them with a plain kafka-python consumer that joins no
group (so looking changes nothing), from the beginning up to the end offsets taken at the start
of the read: a consistent snapshot that always terminates, however busy the topics are.

It also reads the trigger's state the way Faust itself restores it, from the changelog of the
ModelState table (`agents.trigger.state_changelog`): paused, suppressed, pending and in-flight
live there, not on the event topics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable

from agents.policies import ModelState
from streams.codec import Decoded, DecodeError, decode
from streams.deadletter import DeadLetter
from streams.offsets import end_offsets
from streams.topics import Topics

REPLAY_HEADER = "loopline.replay.of"          # on a re-published record: "deadletter:<p>:<o>"
# Not part of the decision record: the clock (one tick a second per model), the serving
# telemetry (one record per prediction or label: high volume) and the dead letters (read apart).
# Not read as the loop's record: dead letters and telemetry (shown on request), and the re-key
# topics, which hold copies of input events forwarded onto their model's partition (agents.rekey).
# Telemetry and copies, not decisions: the experiment state is re-published every few seconds
# while a rollout lives (its decisions are on the rollout topic), shadow pairs are per request.
NOT_DECISIONS = frozenset({"deadletter", "clock", "predictions", "feedback", "inputs-rekeyed",
                           "operator-rekeyed", "experiment", "shadow"})


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: float                          # broker/producer timestamp, POSIX seconds
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return bytes(value or b"").decode(errors="replace")
        return None


@dataclass(frozen=True)
class Seen:
    """A decoded event and where it lies."""
    record: Record
    decoded: Decoded

    @property
    def event(self):
        return self.decoded.event

    @property
    def data(self):
        return self.decoded.data


def _consumer(bootstrap: str, **config):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=20, **config)


def _partitions(consumer, topic: str, timeout: float = 5.0, existing: set[str] | None = None):
    """The topic's partitions; [] if the topic does not exist (yet)."""
    from kafka import TopicPartition

    if topic not in (existing if existing is not None else consumer.topics()):
        return []                                 # (topics(): one metadata request, ~0.1 s)
    deadline = time.monotonic() + timeout
    while True:
        found = consumer.partitions_for_topic(topic)
        if found or time.monotonic() > deadline:
            return [TopicPartition(topic, p) for p in sorted(found or ())]
        time.sleep(0.1)


def read_records(bootstrap: str, topics: Iterable[str], timeout: float = 30.0,
                 **config) -> list[Record]:
    """Every record of `topics` up to their current end, in (topic, partition, offset) order."""
    consumer = _consumer(bootstrap, **config)
    try:
        existing = consumer.topics()
        tps = [tp for topic in topics for tp in _partitions(consumer, topic, existing=existing)]
        if not tps:
            return []
        ends = end_offsets(consumer, tps)
        consumer.seek_to_beginning(*tps)
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {len(tps)} partitions took over {timeout}s")
            for tp, records in consumer.poll(timeout_ms=200).items():
                out.extend(_record(r) for r in records if r.offset < ends[tp])
        out.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return out
    finally:
        consumer.close()


def fetch(bootstrap: str, topic: str, partition: int, offset: int, timeout: float = 15.0,
          **config) -> Record | None:
    """The one record at topic/partition/offset, or None if there is none (any more)."""
    from kafka import TopicPartition

    consumer = _consumer(bootstrap, **config)
    try:
        tp = TopicPartition(topic, partition)
        if tp not in _partitions(consumer, topic):
            return None
        end, start = end_offsets(consumer, [tp])[tp], consumer.beginning_offsets([tp])[tp]
        if not start <= offset < end:
            return None
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    if r.offset == offset:
                        return _record(r)
                    if r.offset > offset:
                        return None
        return None
    finally:
        consumer.close()


def _record(r) -> Record:
    return Record(r.topic, r.partition, r.offset, (r.timestamp or 0) / 1000.0, r.key, r.value,
                  tuple((k, bytes(v or b"")) for k, v in (r.headers or ())))


def decode_all(records: Iterable[Record]) -> list[Seen]:
    """The decodable events among `records`, oldest first by event time."""
    seen = []
    for record in records:
        try:
            seen.append(Seen(record, decode(record.value, record.headers, max_bytes=1 << 30)))
        except DecodeError:
            continue
    seen.sort(key=lambda s: (_time(s), s.record.timestamp))
    return seen


def _time(s: Seen) -> float:
    try:
        return s.event.timestamp
    except ValueError:
        return s.record.timestamp


def read_events(bootstrap: str, topics: Topics, roles: Iterable[str] | None = None,
                **config) -> list[Seen]:
    """Decoded events of the loop's decision topics (all but NOT_DECISIONS), or of `roles`."""
    names = [getattr(topics, r.replace("-", "_")) for r in roles] if roles else [
        name for name, spec in topics.all().items() if spec.role not in NOT_DECISIONS]
    return decode_all(read_records(bootstrap, names, **config))


def read_dead_letters(bootstrap: str, topics: Topics, **config) -> list[tuple[Record, DeadLetter]]:
    out = []
    for record in read_records(bootstrap, [topics.deadletter], **config):
        try:
            out.append((record, DeadLetter.from_record(record.key, record.value, record.headers)))
        except ValueError:
            continue                      # something else was written there: not ours to show
    out.sort(key=lambda item: (item[0].timestamp, item[0].partition, item[0].offset))
    return out


def state_changelog(group: str) -> str:
    """`agents.trigger.state_changelog`, without importing the worker's modules (Faust: ~1 s);
    tests/unit/test_status.py holds the two equal."""
    return f"{group}-{group}-model-state-changelog"


def states_of(records) -> dict:
    """The trigger's ModelState per model from its changelog records."""
    from agents.policies import ModelState

    states: dict = {}
    for record in records:
        model = _faust_key(record.key)
        if model is None:
            continue
        if record.value is None:
            states.pop(model, None)
            continue
        try:
            value = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(value, dict):
            states[model] = ModelState.from_dict(value)
    return states


def model_states(bootstrap: str, group: str, **config) -> dict[str, ModelState]:
    """The trigger's ModelState per model, rebuilt from its Faust table changelog."""
    return states_of(read_records(bootstrap, [state_changelog(group)], **config))


def _faust_key(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    text = raw.decode(errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text
