"""Dead letters of any size: spilled values, bounded headers, and a write that waits until it works."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import pytest

from agents.edge import Edge
from agents.metrics import Metrics
from streams import events as ev
from streams.codec import build, encode, encode_headers
from streams.deadletter import MAX_HEADER_BYTES, MAX_KEY_BYTES, DeadLetter, Spilled
from streams.spill import SpillError, SpillStore, read
from streams.topics import Topics

TOPICS = Topics("t", 2)
LIMIT = 1_000


def message(value: bytes | None, offset: int = 7, headers=None, key: bytes | None = b"clf"):
    return SimpleNamespace(topic=TOPICS.data, partition=1, offset=offset, key=key, value=value,
                           headers=headers if headers is not None else [("trace", b"1")])


class Producer:
    """Fails its first `failures` sends (as a broker refusing or timing out would), then acks."""

    def __init__(self, failures: int = 0):
        self.failures, self.attempts, self.sent = failures, 0, []

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError(f"broker says no ({self.attempts})")
        self.sent.append((topic, key, value, headers))

    def letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_record(k, v, h) for t, k, v, h in self.sent if t == TOPICS.deadletter]


def edge(producer: Producer, tmp_path, spill: SpillStore | None = None) -> Edge:
    return Edge(SimpleNamespace(producer=producer), TOPICS, LIMIT, metrics=Metrics(),
                spill=spill or SpillStore((tmp_path / "spill").as_uri()),
                dead_letter_backoff=(0.001, 0.004))


def count(counter, *labels) -> float:
    return counter.labels(*labels)._value.get()


# --- the record format ------------------------------------------------------------------------

def test_spill_headers_round_trip_with_an_empty_value():
    spilled = Spilled("file:///var/spill/ab12", "ab12" * 16, 3_000_000)
    letter = DeadLetter(value=b"", key=b"clf", topic="t.data.arrived", partition=1, offset=9,
                        reason="record of 3000000 bytes exceeds the limit", spilled=spilled)
    key, value, headers = letter.to_record()
    assert value == b"" and key == b"clf"
    back = DeadLetter.from_record(key, value, headers)
    assert back.spilled == spilled and back.value == b"" and back.omitted == ""
    inline = DeadLetter(value=b"{}", key=None, topic="t", partition=0, offset=0, reason="r")
    assert DeadLetter.from_record(*inline.to_record()).spilled is None


def test_large_key_and_headers_are_bounded_and_the_dead_letter_says_so():
    big = b"h" * (MAX_HEADER_BYTES + 1)
    letter = DeadLetter(value=b"v", key=b"k" * (MAX_KEY_BYTES + 1), topic="t", partition=0,
                        offset=0, reason="r", headers=(("big", big), ("ce_id", b"1"), ("huge", big)))
    key, value, headers = letter.to_record()
    assert key is None
    assert sum(len(n) + len(v) for n, v in headers) < MAX_HEADER_BYTES + 1_000
    back = DeadLetter.from_record(key, value, headers)
    assert back.headers == (("ce_id", b"1"),)          # a big header does not push out the rest
    assert f"key ({MAX_KEY_BYTES + 1} bytes)" in back.omitted
    assert "2 of 3 headers" in back.omitted
    assert DeadLetter.from_record(*back.to_record()).omitted == back.omitted   # kept when re-read


# --- the spill store --------------------------------------------------------------------------

def test_spill_is_content_addressed_and_read_back_checked(tmp_path):
    store = SpillStore((tmp_path / "spill").as_uri())
    data = b"x" * 5_000
    first = store.put(data)
    assert first == store.put(data)                     # a redelivered record: the same object
    assert first.sha256 == hashlib.sha256(data).hexdigest() and first.size == 5_000
    assert first.uri.startswith("file://") and len(list((tmp_path / "spill").iterdir())) == 1
    assert read(first) == data
    path = tmp_path / "spill" / first.sha256
    path.write_bytes(data[:-1] + b"y")                  # altered
    with pytest.raises(SpillError, match="not the 5000 bytes"):
        read(first)
    path.write_bytes(data[:100])                        # torn by a crash mid-write: rewritten
    assert read(store.put(data)) == data
    path.unlink()
    with pytest.raises(SpillError, match="cannot read"):
        read(first)


def test_an_unusable_spill_store_is_refused_when_configured():
    with pytest.raises(SpillError, match="nosuchproto"):
        SpillStore("nosuchproto://bucket/spill")


# --- the edge ---------------------------------------------------------------------------------

def test_a_value_over_the_limit_is_spilled_and_the_dead_letter_stays_small(tmp_path):
    producer = Producer()
    original = b"{" + b"x" * (3 * LIMIT)
    asyncio.run(edge(producer, tmp_path).dead_letter(message(original), "too large", "DecodeError"))
    (topic, key, value, headers), = producer.sent
    assert value == b"" and len(b"".join(v for _, v in headers)) < 2 * LIMIT
    letter, = producer.letters()
    assert letter.spilled.size == len(original) and read(letter.spilled) == original
    assert (letter.topic, letter.offset, letter.headers) == (TOPICS.data, 7, (("trace", b"1"),))


def test_a_value_within_the_limit_stays_inline(tmp_path):
    producer = Producer()
    asyncio.run(edge(producer, tmp_path).dead_letter(message(b"y" * LIMIT), "bad", "DecodeError"))
    letter, = producer.letters()
    assert letter.value == b"y" * LIMIT and letter.spilled is None
    assert not (tmp_path / "spill").exists()


def test_a_failing_publish_is_retried_until_written_and_counted(tmp_path):
    producer = Producer(failures=2)
    e = edge(producer, tmp_path)
    asyncio.run(e.dead_letter(message(b"bad"), "not JSON", "DecodeError"))
    assert producer.attempts == 3 and len(producer.letters()) == 1
    assert count(e.metrics.dead_letter_failures, TOPICS.data, "publish") == 2
    assert count(e.metrics.dead_letters, TOPICS.data, "DecodeError") == 1 and e.dead_letters == 1


def test_a_failing_spill_store_is_retried_too(tmp_path):
    class FlakyStore(SpillStore):
        calls = 0

        def put(self, data):
            FlakyStore.calls += 1
            if FlakyStore.calls == 1:
                raise OSError("volume not mounted")
            return super().put(data)

    producer = Producer()
    e = edge(producer, tmp_path, FlakyStore((tmp_path / "spill").as_uri()))
    asyncio.run(e.dead_letter(message(b"z" * (2 * LIMIT)), "too large", "DecodeError"))
    assert count(e.metrics.dead_letter_failures, TOPICS.data, "spill") == 1
    assert read(producer.letters()[0].spilled) == b"z" * (2 * LIMIT)


def test_the_agent_moves_past_a_poison_record_only_once_its_dead_letter_is_written(tmp_path):
    """Faust acknowledges a record when the agent asks for the next one: the stream must not be
    asked for the valid event before the poison record's dead letter went out."""
    producer = Producer(failures=2)
    e = edge(producer, tmp_path)
    valid = build(ev.DataArrived(uri="file:///d", rows=1, version="v"), "clf", source="tests")
    records = [message(b"not json", offset=1), message(encode(valid), offset=2, headers=encode_headers())]
    log: list[str] = []

    class Stream:
        async def events(self):
            for record in records:
                log.append(f"next {record.offset} after {producer.attempts} sends")
                yield SimpleNamespace(message=record)

    async def handle(decoded):
        log.append(f"handled {decoded.event.id}")

    asyncio.run(e.consume(Stream(), handle, owns={TOPICS.data}))
    assert log == ["next 1 after 0 sends", "next 2 after 3 sends", f"handled {valid.id}"]


def test_the_worker_stopping_still_stops_a_dead_letter_that_waits(tmp_path):
    producer = Producer(failures=10**9)
    e = edge(producer, tmp_path)

    async def main():
        task = asyncio.create_task(e.dead_letter(message(b"bad"), "r", "DecodeError"))
        while producer.attempts < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert e.dead_letters == 0 and count(e.metrics.dead_letters, TOPICS.data, "DecodeError") == 0
