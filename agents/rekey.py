"""Re-keying: an input event is handled on its model's partition, however it was produced.

A model's state (the trigger's `ModelState`, the metric guard's, the operator gate's replay
memory) lives in Faust tables, and Faust writes a table change to the changelog partition of
the record being handled. loopline's own publisher keys by model name, so all of a model's
events land on `Topics.partition_of(model)` and its state is one state. Producers outside
loopline key as they like, or not at all, and librdkafka's default partitioner (confluent-kafka,
Go, Node, .NET) is not murmur2: their events land anywhere. Handled where they landed, one model
would get one state per partition (per worker, with several), each restored from its own
changelog partition: batches counted apart, a stale in-flight training blocking the model.

So before any table is touched, a record of an input topic (data, drift, metrics, operator)
that sits off its model's partition is forwarded unchanged (same bytes and headers: the same
CloudEvent, plus a provenance header) to the topic's re-key topic, on the model's partition,
keyed by the model name; the handler returns once the broker has acknowledged it, so the
offset is committed only after the forward (at-least-once: a redelivery forwards a second
copy, which the trigger counts once by event key, as any redelivered event). The stateful
agents read the re-key topics too and handle the copy there. A record already on its model's
partition (all of loopline's own) takes no extra hop, so every order Kafka gives is kept: a
producer that keys a model's events consistently has them on one partition, forwarded in
order; keyless or mixed keys had no order across partitions to begin with.

An event about an unknown model is not forwarded: the first reader dead-letters it, as before.
"""

from __future__ import annotations

import functools
import logging
from typing import Awaitable, Callable, Mapping

from faust import current_event
from prometheus_client import Counter

from agents.context import Context
from streams.codec import Decoded
from streams.topics import Topics

log = logging.getLogger("loopline.rekey")

FROM_HEADER = "loopline.rekeyed.from"     # on a forwarded record: "<topic>:<partition>:<offset>"


class Route:
    """Where a record must be handled: pure, from the topic, partition and subject alone (the
    record's key says nothing: producers key as they like)."""

    def __init__(self, topics: Topics, models: Mapping):
        self.rekey_topics, self.topics, self.models = topics.rekey_topics(), topics, models
        self.homes = {name: topics.partition_of(name) for name in models}

    def home(self, subject: str) -> int | None:
        """The partition of the model `subject` names (None: no model); a family member's is
        found on its first event (agents.catalog) and kept."""
        home = self.homes.get(subject)
        if home is None and self.models.get(subject) is not None:
            home = self.homes[subject] = self.topics.partition_of(subject)
        return home

    def forward_to(self, topic: str, partition: int, subject: str) -> tuple[str, int] | None:
        """(re-key topic, the model's partition) when the record must move first; None when it
        is handled where it is: on its model's partition, loopline's own topics (always keyed
        by model), or a model nobody configured (the first reader dead-letters it)."""
        target = self.rekey_topics.get(topic)
        home = self.home(subject) if target is not None else None
        if target is None or home is None or partition == home:
            return None
        return target, home


def _current_message():
    """The record Faust is handling in this task (the one its tables write changelogs for)."""
    event = current_event()
    return event.message if event is not None else None


class Rekey:
    """Puts a stateful agent's handler behind the route; `message` gives the record in hand."""

    def __init__(self, ctx: Context, message=_current_message):
        self.ctx, self.message = ctx, message
        self.route = Route(ctx.opts.topics, ctx.models)
        self.forwarded = Counter(
            "loopline_events_rekeyed", "Input events that arrived off their model's partition "
            "and were forwarded onto it, by source topic", ["topic"], registry=ctx.metrics.registry)

    def wrap(self, handle: Callable[[Decoded], Awaitable[None]]):
        """`handle`, called only for records on their model's partition; others are forwarded."""
        @functools.wraps(handle)        # the edge names the agent after the handler
        async def on_home_partition(d: Decoded) -> None:
            message = self.message()     # None outside a stream (a direct call): no record
            target = None if message is None else self.route.forward_to(
                message.topic, message.partition, d.event.subject)
            if target is None:
                await handle(d)
            else:
                await self.forward(message, d.event.subject, *target)
        return on_home_partition

    async def forward(self, message, model: str, topic: str, partition: int) -> None:
        headers = message.headers.items() if isinstance(message.headers, dict) else message.headers
        origin = f"{message.topic}:{message.partition}:{message.offset}"
        await self.ctx.app.producer.send_and_wait(
            topic, model.encode(), message.value, partition, None,
            [*(headers or ()), (FROM_HEADER, origin.encode())])
        self.forwarded.labels(message.topic).inc()
        log.debug("%s: %s forwarded to %s[%d]", model, origin, topic, partition)
