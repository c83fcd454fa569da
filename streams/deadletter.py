"""Dead-letter records: the original bytes, where they came from, and why they were refused.

The value and key stay byte-for-byte what was consumed (so a fixed consumer, or `dlq replay`,
can re-publish exactly the original); the provenance and the reason travel in headers, the way
Kafka Connect's dead-letter queues do. A poison record therefore never stops a partition and
never disappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from streams.envelope import utc_now

PREFIX = "loopline.dlq."


@dataclass(frozen=True)
class DeadLetter:
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    reason: str
    error: str = "DecodeError"
    time: str = field(default_factory=utc_now)
    headers: tuple[tuple[str, bytes], ...] = ()     # the original record's headers

    def to_record(self) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) to produce on the dead-letter topic."""
        meta = {"topic": self.topic, "partition": str(self.partition), "offset": str(self.offset),
                "reason": self.reason[:4000], "error": self.error, "time": self.time}
        headers = [h for h in self.headers if not h[0].startswith(PREFIX)]
        headers += [(PREFIX + name, value.encode()) for name, value in meta.items()]
        return self.key, self.value, headers

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None,
                    headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        headers = [(name, bytes(raw or b"")) for name, raw in headers or ()]
        meta = {name[len(PREFIX):]: raw.decode(errors="replace")
                for name, raw in headers if name.startswith(PREFIX)}
        if "reason" not in meta:
            raise ValueError("not a loopline dead-letter record (no reason header)")
        return cls(value=value, key=key, topic=meta.get("topic", "?"),
                   partition=int(meta.get("partition", -1)), offset=int(meta.get("offset", -1)),
                   reason=meta["reason"], error=meta.get("error", ""), time=meta.get("time", ""),
                   headers=tuple(h for h in headers if not h[0].startswith(PREFIX)))
