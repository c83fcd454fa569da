"""Prometheus metrics of the worker, served at GET /metrics on its web port.

Why: "is the loop healthy?" must be answerable without reading logs: how many events each agent
consumed, what the policies decided, what is training, how long jobs take, how far the worker
lags behind, how much ends in the dead-letter topic, and how long new data takes to reach the
serving alias. Names follow Prometheus conventions: `loopline_` prefix, base units (seconds),
`_total` counters, and labels drawn from small fixed sets (agent, event type, decision,
outcome, topic, model) -- never event, run or version ids.

Each app owns its `Metrics` (a dedicated CollectorRegistry, not the process-global one), so
several apps in one process, as in tests, never collide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("loopline.metrics")

DECISIONS = {
    "retrain": ("requested", "skipped", "suppressed", "duplicate", "paused", "resumed"),
    "metric": ("fine", "retrain", "rollback", "suppressed", "skipped", "duplicate"),
    "promotion": ("promoted", "rejected"),
    "deploy": ("deployed", "rolled_back", "refused", "rollout_started"),
}
COMMANDS = ("retrain", "promote", "rollback", "pause", "resume")
COMMAND_OUTCOMES = ("accepted", "unsigned", "unknown_key", "bad_signature", "operator_mismatch",
                    "expired", "no_expiry", "bad_time", "no_keys", "replayed")
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_MEMORY = 10_000          # data events / chains remembered for the data-to-deployment time


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_consumed = Counter(
            "loopline_events_consumed", "Events decoded and handed to an agent, by agent and event type",
            ["agent", "type"], registry=r)
        self.decisions = Counter(
            "loopline_decisions", "Policy decisions by decision (retrain, metric, promotion, deploy) and outcome",
            ["decision", "outcome"], registry=r)
        self.records_lost = Counter(
            "loopline_records_lost", "Fire-and-forget records (decisions) the broker did not take, "
            "by event type", ["type"], registry=r)
        self.operator_commands = Counter(
            "loopline_operator_commands", "Operator commands by command and verification outcome",
            ["command", "outcome"], registry=r)
        self.trainings_in_flight = Gauge(
            "loopline_trainings_in_flight", "Trainings requested and not yet finished, per model",
            ["model"], registry=r)
        self.job_duration = Histogram(
            "loopline_job_duration_seconds", "Wall time of finished training pipelines",
            ["launcher", "outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "loopline_consumer_lag", "Records not yet consumed by the worker group (end - committed), "
            "summed over this worker's partitions of each topic", ["topic"], registry=r)
        self.dead_letters = Counter(
            "loopline_dead_letters", "Records written to the dead-letter topic, by source topic and error",
            ["topic", "error"], registry=r)
        self.dead_letter_failures = Counter(
            "loopline_dead_letter_failures", "Failed attempts to write a dead letter (retried until "
            "written, the partition waiting), by source topic and stage (spill, publish)",
            ["topic", "stage"], registry=r)
        self.data_to_deployment = Histogram(
            "loopline_data_to_deployment_seconds", "From the arrival of the oldest new data batch of a "
            "training to the deployment of the model it produced", buckets=DURATION_BUCKETS, registry=r)
        for decision, outcomes in DECISIONS.items():          # every known series exists from 0
            for outcome in outcomes:
                self.decisions.labels(decision, outcome)
        for command in COMMANDS:
            for outcome in COMMAND_OUTCOMES:
                self.operator_commands.labels(command, outcome)
        self._data_times: OrderedDict[str, float] = OrderedDict()
        self._chain_times: OrderedDict[str, float] = OrderedDict()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- helpers the agents call ---------------------------------------------------------------
    def decision(self, decision: str, outcome: str) -> None:
        self.decisions.labels(decision, outcome).inc()

    def note_data(self, event_key: str, timestamp: float) -> None:
        _remember(self._data_times, event_key, timestamp)

    def note_request(self, correlation_id: str, causes: Iterable[str]) -> None:
        """A training was requested for these causes: remember when its oldest data arrived."""
        times = [self._data_times[c] for c in causes if c in self._data_times]
        if times:
            _remember(self._chain_times, correlation_id, min(times))

    def observe_deployment(self, correlation_id: str, now: float | None = None) -> None:
        arrived = self._chain_times.pop(correlation_id, None)
        if arrived is not None:
            self.data_to_deployment.observe(max(0.0, (now or time.time()) - arrived))


def _remember(store: OrderedDict, key: str, value: float) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _MEMORY:
        store.popitem(last=False)


def install(app, metrics: Metrics, *, group: str, broker: str, topics: Iterable[str],
            models: Iterable[str], interval: float, probe_config: dict | None = None) -> None:
    """Serve /metrics on the app's web server and measure consumer lag every `interval` s."""
    from aiohttp.web import Response

    from streams.lag import LagProbe

    for model in models:
        metrics.trainings_in_flight.labels(model).set(0)
    watched = set(topics)

    @app.page("/metrics")
    async def metrics_page(self, request):
        # aiohttp refuses a content type with a charset in `content_type=`: set the header.
        return Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    probe: list[LagProbe] = []
    reported: set[str] = set()         # loop topics this worker consumed partitions of

    @app.timer(interval=interval)
    async def measure_lag():
        try:
            # This worker's partitions only: summed over all workers, the lag is the group's.
            mine = sorted({(tp.topic, tp.partition) for tp in app.consumer.assignment()
                           if tp.topic in watched})
            reported.update(topic for topic, _ in mine)
            if not probe:
                probe.append(await asyncio.to_thread(LagProbe, broker, group, **(probe_config or {})))
            measured = await asyncio.to_thread(probe[0].measure, mine)
        except Exception as exc:  # noqa: BLE001 - a metric must never take the worker down
            log.warning("consumer lag not measured: %s", exc)
            if probe:
                await asyncio.to_thread(probe.pop().close)
            return
        totals = {topic: 0 for topic in reported}      # 0: no partition of it here (any more)
        for item in measured:
            totals[item.topic] += item.lag
        for topic, lag in totals.items():
            metrics.consumer_lag.labels(topic).set(lag)
