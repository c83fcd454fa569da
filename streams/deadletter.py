"""Dead-letter records: the original bytes, where they came from, and why they were refused.

The value and key stay byte-for-byte what was consumed (so a fixed consumer, or `dlq replay`,
can re-publish exactly the original); the provenance and the reason travel in headers, the way
Kafka Connect's dead-letter queues do. A poison record therefore never stops a partition and
never disappears.

A dead letter must always fit, or refusing a record could lose it: a value over
`MAX_INLINE_BYTES` travels instead in a spill store (`streams.spill`), and the dead letter
names it (`loopline.dlq.spilled`: URI, `.sha256`, `.size`) with an empty value. Key and
headers are copied up to `MAX_KEY_BYTES` / `MAX_HEADER_BYTES`; what did not fit is left out
and named in `loopline.dlq.omitted`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from streams.envelope import utc_now

PREFIX = "loopline.dlq."
# The producer's request limit (Faust's and kafka-python's default: ~1 MB) and the broker's
# message.max.bytes (1 MB by default) must hold the dead letter with its headers: half of it.
MAX_INLINE_BYTES = 512 * 1024
MAX_KEY_BYTES = 4 * 1024            # loopline's keys are model names
MAX_HEADER_BYTES = 16 * 1024        # the original headers, all together (names and values)


@dataclass(frozen=True)
class Spilled:
    """Where a dead letter's original value lies, and how to know it is the same bytes."""
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DeadLetter:
    value: bytes | None              # the original value; b"" when it was spilled
    key: bytes | None
    topic: str
    partition: int
    offset: int
    reason: str
    error: str = "DecodeError"
    time: str = field(default_factory=utc_now)
    headers: tuple[tuple[str, bytes], ...] = ()     # the original record's headers
    spilled: Spilled | None = None
    omitted: str = ""                # what of the original key and headers was not kept

    def to_record(self) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) to produce on the dead-letter topic: at most the value, plus
        `MAX_KEY_BYTES` and `MAX_HEADER_BYTES` and a few hundred bytes of provenance."""
        key, left_out = self.key, [self.omitted] if self.omitted else []
        if key is not None and len(key) > MAX_KEY_BYTES:
            key = None
            left_out.append(f"key ({len(self.key)} bytes)")
        headers, budget, dropped, dropped_bytes = [], MAX_HEADER_BYTES, 0, 0
        for name, value in self.headers:
            if name.startswith(PREFIX):
                continue
            size = len(name.encode()) + len(value)
            if size <= budget:          # each that still fits: a big one does not push out the rest
                headers.append((name, value))
                budget -= size
            else:
                dropped, dropped_bytes = dropped + 1, dropped_bytes + size
        if dropped:
            left_out.append(f"{dropped} of {dropped + len(headers)} headers ({dropped_bytes} bytes)")
        meta = {"topic": self.topic, "partition": str(self.partition), "offset": str(self.offset),
                "reason": self.reason[:4000], "error": self.error, "time": self.time}
        if self.spilled is not None:
            meta.update(spilled=self.spilled.uri, sha256=self.spilled.sha256,
                        size=str(self.spilled.size))
        if left_out:
            meta["omitted"] = "; ".join(left_out)
        headers += [(PREFIX + name, value.encode()) for name, value in meta.items()]
        return key, self.value, headers

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None,
                    headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        headers = [(name, bytes(raw or b"")) for name, raw in headers or ()]
        meta = {name[len(PREFIX):]: raw.decode(errors="replace")
                for name, raw in headers if name.startswith(PREFIX)}
        if "reason" not in meta:
            raise ValueError("not a loopline dead-letter record (no reason header)")
        spilled = None
        if "spilled" in meta:
            spilled = Spilled(meta["spilled"], meta.get("sha256", ""), int(meta.get("size", -1)))
        return cls(value=value, key=key, topic=meta.get("topic", "?"),
                   partition=int(meta.get("partition", -1)), offset=int(meta.get("offset", -1)),
                   reason=meta["reason"], error=meta.get("error", ""), time=meta.get("time", ""),
                   headers=tuple(h for h in headers if not h[0].startswith(PREFIX)),
                   spilled=spilled, omitted=meta.get("omitted", ""))
