"""What every agent shares: options, the configured models, the ports and the edge.

Handlers take a `Context` instead of Faust globals, so each agent module is a plain class that
a test could drive with decoded events, and `agents.app` is only wiring.

Two ways out. `publish` is for side effects (a training request, a promotion): it waits for the
broker's ack, so the input's offset is committed only after it. `record` is for the decision
record (`DecisionRecorded`, on `decision.recorded`: every policy decision, skips included, so
"why did this event not start a training?" has an answer on the bus). It hands the record to
the same producer and does not wait: a skipped event costs no extra round trip on the
trigger's path. What that means for delivery: a worker that crashes before the producer sent
its buffer loses those records; the decisions themselves are not lost (the state they changed
is in the changelog, their side effects were published with an ack), and a redelivered input
is decided again, so its record may then appear twice, or say "duplicate". A record the broker
refuses is logged and counted (`loopline_records_lost_total`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Mapping

from agents import catalog, transport
from agents.edge import Edge, PermanentError
from agents.metrics import Metrics
from agents.ports import Launcher, Registry
from streams import events as ev
from streams.codec import build
from streams.envelope import CloudEvent
from streams.security import KafkaSecurity
from streams.spill import SpillStore
from streams.topics import Topics

log = logging.getLogger("loopline.context")


@dataclass(frozen=True)
class AppOptions:
    broker: str
    group: str
    topics: Topics
    source: str = "loopline/worker"
    web_port: int = 6066
    broker_lost_seconds: float | None = 120.0   # exit 3 when Kafka has not answered this long
    datadir: str = "faust-data"            # Faust's local table data (under the state dir)
    table_store: str = "memory"            # memory | rocksdb (files in datadir: read back at restart)
    web_bind: str = "127.0.0.1"          # 0.0.0.0 in a pod, for the kubelet's probes
    rebalance_timeout: float = 4.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    fetch_max_wait_ms: int = transport.DEFAULT_FETCH_MAX_WAIT_MS
    tick_interval: float = 1.0
    poll_interval: float = 0.1
    max_event_bytes: int = 1_000_000
    job_env: Mapping[str, str] = field(default_factory=dict)   # every launched run gets it
    operator_keys: str | None = None     # keys file of the operators (None: commands refused)
    lag_interval: float = 5.0            # how often /metrics' consumer lag is measured
    security: KafkaSecurity = field(default_factory=KafkaSecurity)   # TLS / SASL, every client
    deadletter_spill_uri: str | None = None   # where too large dead-lettered values go (fsspec)


class Context:
    def __init__(self, app, opts: AppOptions, models: Mapping, launchers: Mapping[str, Launcher],
                 registry: Registry):
        self.app, self.opts, self.models = app, opts, models
        self.launchers, self.registry = launchers, registry
        self.metrics = Metrics()
        spill = SpillStore(opts.deadletter_spill_uri) if opts.deadletter_spill_uri else None
        self.edge = Edge(app, opts.topics, opts.max_event_bytes, metrics=self.metrics, spill=spill)

    def model(self, event: CloudEvent):
        """The configured model an event is about (a family's member comes into being here, on
        its first event: agents.catalog); a name that is no model is a permanent error."""
        model = self.models.get(event.subject)
        if model is None:
            raise PermanentError(catalog.unknown(self.models, event.subject))
        return model

    def event(self, data: ev.EventData, model: str, cause: CloudEvent | None) -> CloudEvent:
        return build(data, model, source=self.opts.source, cause=cause)

    async def publish(self, data: ev.EventData, model: str, cause: CloudEvent | None) -> CloudEvent:
        event = self.event(data, model, cause)
        await self.edge.publish(event)
        return event

    async def record(self, policy: str, outcome: str, reason: str, model: str,
                     signal: CloudEvent | None, request_id: str | None = None) -> CloudEvent:
        """Put one decision on the record (fire-and-forget, see above), caused by `signal`."""
        event = self.event(ev.DecisionRecorded(
            policy=policy, outcome=outcome, reason=reason, request_id=request_id,
            signal_id=signal.id if signal else None, signal_type=signal.type if signal else None),
            model, signal)
        await self.edge.send(event)
        return event

    async def record_lineage(self, model: str, version: str, ids: Mapping[str, str],
                             append: Mapping[str, str] | None = None) -> None:
        """Lineage ids onto the version's tags, best effort: the topics hold the same record,
        and a registry hiccup must not redo (and so duplicate) the events already published."""
        try:
            await asyncio.to_thread(self.registry.record_lineage, model, version, dict(ids),
                                    dict(append or {}))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("%s v%s: lineage tags not written: %s", model, version, exc)
