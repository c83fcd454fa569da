"""The edge of every agent: records in, typed events out, poison records to the dead-letter topic.

An exception inside a Faust agent can skip an offset or stop a partition, so nothing escapes an
agent body: a record that cannot be decoded, or whose handling fails permanently, is written to
the dead-letter topic (original bytes, provenance, reason) and the agent moves on. Several
agents may read one topic; only the topic's owner dead-letters it, so a bad record is recorded
once, not once per reader.

Writing the dead letter can fail too (a broker outage, an unusable spill store): then the edge
retries, with capped back-off, until it is written, and only then moves on. The partition
waits, nothing is lost, and each failure is logged and counted
(`loopline_dead_letter_failures_total`). A value too large to travel in a dead letter is
spilled first (`streams.spill`): a dead letter always fits the producer and the broker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Awaitable, Callable

from streams.codec import Decoded, DecodeError, decode, encode, encode_headers
from streams.deadletter import MAX_INLINE_BYTES, DeadLetter
from streams.envelope import CloudEvent
from streams.spill import SpillError, SpillStore
from streams.topics import Topics

log = logging.getLogger("loopline.edge")


class PermanentError(Exception):
    """Handling this event can never succeed (bad reference, unknown model): dead-letter it."""


class Edge:
    def __init__(self, app, topics: Topics, max_bytes: int, retries: int = 3,
                 backoff: float = 0.5, metrics=None, spill: SpillStore | None = None,
                 dead_letter_backoff: tuple[float, float] = (0.5, 30.0)):
        self.app = app
        self.metrics = metrics          # agents.metrics.Metrics, or None
        self.topics = topics
        self.max_bytes = max_bytes
        self.inline_bytes = min(max_bytes, MAX_INLINE_BYTES)   # a larger value is spilled
        self.spill = spill
        self.dead_letter_backoff = dead_letter_backoff         # (first, longest) wait in s
        self.retries = retries
        self.backoff = backoff
        self.accepts = {name: spec.accepts for name, spec in topics.all().items()}
        self.dead_letters = 0

    async def publish(self, event: CloudEvent, topic: str | None = None,
                      partition: int | None = None) -> None:
        """Publish and wait for the broker's ack: the offset is committed only after this returns.
        The partition is the subject's (the key's) unless given."""
        await self.app.producer.send_and_wait(
            topic or self.topics.for_type(event.type), event.subject.encode(), encode(event),
            partition, None, encode_headers())

    async def send(self, event: CloudEvent, topic: str | None = None) -> None:
        """Hand `event` to the producer and return without waiting for the broker's ack: for
        records that are not a side effect (decisions, `Context.record`). The producer batches
        it with whatever goes out next; a failure to deliver is logged and counted, never raised
        into the agent (the decision it records was made and acted on either way)."""
        try:
            pending = await self.app.producer.send(
                topic or self.topics.for_type(event.type), event.subject.encode(), encode(event),
                None, None, encode_headers())
        except Exception as exc:  # noqa: BLE001 - see above
            self._unsent(event, exc)
            return
        pending.add_done_callback(lambda done: self._delivered(event, done))

    def _delivered(self, event: CloudEvent, done) -> None:
        if not done.cancelled() and done.exception() is not None:    # (retrieved: no asyncio warning)
            self._unsent(event, done.exception())

    def _unsent(self, event: CloudEvent, exc: BaseException) -> None:
        log.warning("%s %s not recorded: %s: %s", event.type, event.id, type(exc).__name__, exc)
        if self.metrics is not None:
            self.metrics.records_lost.labels(event.type).inc()

    async def dead_letter(self, message, reason: str, error: str) -> None:
        """Write `message` to the dead-letter topic; return once the broker has acknowledged it.

        Until then the caller's offset stays on the record: a failed attempt is logged, counted
        and retried after a back-off, forever if need be. Nothing but cancellation (the worker
        stopping: the record is redelivered) escapes, since an agent that raised would be
        restarted by Faust past the record."""
        log.warning("dead-letter %s[%s]@%s: %s", message.topic, message.partition,
                    message.offset, reason)
        headers = message.headers.items() if isinstance(message.headers, dict) else message.headers
        letter = DeadLetter(
            value=message.value, key=message.key, topic=message.topic,
            partition=message.partition, offset=message.offset, reason=reason, error=error,
            headers=tuple((k, bytes(v or b"")) for k, v in headers or ()))
        delay, longest = self.dead_letter_backoff
        attempt = 0
        while True:
            attempt += 1
            stage = "spill"
            try:
                if letter.value is not None and len(letter.value) > self.inline_bytes:
                    if self.spill is None:
                        raise SpillError("no spill store configured")
                    spilled = await asyncio.to_thread(self.spill.put, letter.value)
                    letter = replace(letter, value=b"", spilled=spilled)
                stage = "publish"
                key, value, hdrs = letter.to_record()
                await self.app.producer.send_and_wait(self.topics.deadletter, key, value, None,
                                                      None, hdrs)
                break
            except Exception as exc:  # noqa: BLE001 - see above; CancelledError is not one
                if self.metrics is not None:
                    self.metrics.dead_letter_failures.labels(message.topic, stage).inc()
                log.error("dead letter of %s[%s]@%s not written (%s, attempt %d: %s: %s); "
                          "the partition waits, retrying in %.1f s", message.topic,
                          message.partition, message.offset, stage, attempt,
                          type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
        self.dead_letters += 1
        if self.metrics is not None:
            self.metrics.dead_letters.labels(message.topic, error).inc()

    async def consume(self, stream, handle: Callable[[Decoded], Awaitable[None]],
                      owns: set[str]) -> None:
        """Run `handle` for every decodable record of `stream`; dead-letter what fails."""
        agent = getattr(handle, "__qualname__", "agent").split(".")[0].lower()  # Trigger.handle
        async for event in stream.events():
            message = event.message
            try:
                decoded = decode(message.value, message.headers,
                                 accepts=self.accepts.get(message.topic), max_bytes=self.max_bytes)
            except DecodeError as exc:
                if message.topic in owns:
                    await self.dead_letter(message, str(exc), "DecodeError")
                continue
            if self.metrics is not None:
                self.metrics.events_consumed.labels(agent, decoded.event.type).inc()
            await self._handle(handle, decoded, message, owner=message.topic in owns)

    async def _handle(self, handle, decoded: Decoded, message, owner: bool) -> None:
        for attempt in range(1, self.retries + 1):
            try:
                await handle(decoded)
                return
            except PermanentError as exc:
                if owner:
                    await self.dead_letter(message, str(exc), type(exc).__name__)
                else:
                    log.info("skipping %s: %s", decoded.event.key, exc)
                return
            except Exception as exc:  # noqa: BLE001 - the agent edge: nothing may escape
                log.exception("handling %s failed (attempt %d/%d)", decoded.event.key, attempt,
                              self.retries)
                if attempt == self.retries:
                    await self.dead_letter(message, f"{type(exc).__name__}: {exc}", "HandlerError")
                    return
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
