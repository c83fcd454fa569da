"""Faust's aiokafka transport, fixed in four places, under the URL scheme `loopline://`.

1. Fetch wait. Faust's driver hard-codes `fetch_max_wait_ms=1500` when it builds the worker's
   consumer. The value comes from `app.fetch_max_wait_ms` instead, and once the consumer has
   met the broker, `fetch_wait()` decides what a fetch may wait there: see its docstring for why
   Tansu and Apache Kafka get different waits.
2. Where a changelog ends. Table recovery reads each changelog partition up to its end offset
   from ListOffsets, which Tansu answers with the last batch's base offset + 1 (see
   streams.offsets). A worker taking over a partition then missed the newest table writes of
   the worker it replaced whenever they had shared a producer batch: trigger state older than
   the requests already sent (one event in two trainings, or an event never trained), and a
   trainer that forgot a launch. The worker-kill fault test caught it. The end is now the
   larger of ListOffsets and a fetch's high watermark.
3. Seeking back to the committed offsets: see `ConsumerThread._seek_to_committed`.
4. What may be committed: see `Consumer._new_offset`.

`credentials()` turns loopline's Kafka security (streams.security) into Faust's own credentials
object, the one way Faust hands TLS and SASL to every aiokafka client it makes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Mapping

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import TopicPartition
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.security import KafkaSecurity

SCHEME = "loopline"
# LOOPLINE_FETCH_MAX_WAIT_MS's default, which means "by broker kind" (fetch_wait()): this on a
# broker that holds a fetch (Tansu), ANSWERING_FETCH_MAX_WAIT_MS on one that answers when data arrives.
DEFAULT_FETCH_MAX_WAIT_MS = 10
ANSWERING_FETCH_MAX_WAIT_MS = 500

log = logging.getLogger(__name__)


def holds_fetches(cluster_id: str | None) -> bool:
    """Whether the broker holds a fetch instead of answering it when data arrives: Tansu does
    (its cluster id is `tansu_cluster` unless its --kafka-cluster-id says otherwise)."""
    return (cluster_id or "").lower().startswith("tansu")


def fetch_wait(configured: int, cluster_id: str | None) -> int:
    """The fetch wait of the worker's consumer on the broker whose cluster id is `cluster_id`:
    `configured` (LOOPLINE_FETCH_MAX_WAIT_MS) when it is not the default, else by broker kind.

    The wait is how long the broker may keep a fetch that finds no data. It costs latency only
    on a broker that does not answer as soon as data arrives, and it costs CPU everywhere: an
    idle worker sends one fetch (over ~44 partitions, parsed in Python) per wait.

    - Tansu (the embedded broker) keeps re-checking a fetch until its wait is up instead of
      answering when data lands, so there the wait is latency: 10 ms. Measured on 2026-12-02
      (bare aiokafka hop, 50 records/s, a loaded 2-core machine): p50 6-7 ms at a 10 ms wait,
      8-11 at 25, 16 at 50, 29-33 at 100, 127 at 500. Shorter than 10 was worse under load (more
      fetches, more broker CPU; README, Performance). The price is idle CPU: ~11 % of a core.
    - Apache Kafka answers a fetch as soon as fetch.min.bytes (1) is there, so a long wait costs
      no latency and saves the idle polling: 500 ms (the Java and aiokafka clients' own
      default). Measured the same day, Apache Kafka 4.4: bare hop p50 5-30 ms at 10 ms, 4-11 ms
      at 500, 5-8 ms at 2000 (no cost; fewer fetches left more CPU). bench.trigger's own
      measure (30 models, 300 events at 20/s, load ~2.8, alternating): 11 ms gave p50 80 and
      61 ms, p99 523 and 211 ms, idle worker 20-22 % of a core; 500 ms gave p50 48 and 26 ms,
      p99 319 and 92 ms, idle 5.0 %. One cost remains: aiokafka keeps one fetch in flight per
      broker, so a partition Faust resumes (after a rebalance, or a full stream buffer) waits
      for the fetch in flight to come back: up to 500 ms, only when nothing else arrives.
    """
    if configured != DEFAULT_FETCH_MAX_WAIT_MS or holds_fetches(cluster_id):
        return configured
    return ANSWERING_FETCH_MAX_WAIT_MS


def credentials(security: KafkaSecurity):
    """Faust's `broker_credentials` for `security` (None: plaintext); Faust gives them to
    every aiokafka client it makes."""
    if security.protocol == "PLAINTEXT":
        return None
    context = security.ssl_context()
    if security.protocol == "SSL":
        return faust.SSLCredentials(context)
    if security.sasl_mechanism == "OAUTHBEARER":
        return faust.OAuthCredentials(oauth_cb=TokenProvider(security), ssl_context=context)
    username, password = security.credentials()
    return faust.SASLCredentials(username=username, password=password, ssl_context=context,
                                 mechanism=security.sasl_mechanism)


class TokenProvider(AbstractTokenProvider):
    """aiokafka asks for an OAUTHBEARER token at each connection: read it then (a file read, or
    the user's callback, in a thread: neither belongs on the event loop)."""

    def __init__(self, security: KafkaSecurity):
        self.security = security

    async def token(self) -> str:
        return await asyncio.to_thread(self.security.token)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()
        await self._tune_fetch_wait()

    async def _tune_fetch_wait(self) -> None:
        """The broker is known now: set the wait `fetch_wait()` picks for it (aiokafka's fetcher
        reads it into each fetch request it builds)."""
        consumer = self._ensure_consumer()
        configured = consumer._fetch_max_wait_ms
        try:
            client = consumer._client
            metadata = await client.send(client.get_random_node(), MetadataRequest([], False))
            cluster_id = getattr(metadata, "cluster_id", None)
        except Exception as exc:  # noqa: BLE001 - the configured wait is a safe fallback
            log.warning("broker kind not known (%s): fetch wait stays %d ms", exc, configured)
            return
        wait = fetch_wait(configured, cluster_id)
        consumer._fetch_max_wait_ms = consumer._fetcher._fetch_max_wait_ms = wait
        log.info("fetch wait %d ms (broker cluster id %r)", wait, cluster_id)

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the value until start() builds its Fetcher, so setting it here is enough.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return consumer

    async def seek_to_committed(self) -> Mapping:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping:
        """aiokafka seeks only partitions whose committed offset is above 0 and leaves the rest
        where they are. Faust seeks back to the committed offsets to read again what it fetched
        but did not hand out (a rebalance stopped the flow): on a partition with nothing
        committed yet those records were skipped for good. Such partitions start over."""
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        unset = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if unset:
            await consumer.seek_to_beginning(*unset)
        return committed

    async def _highwaters(self, partitions) -> Mapping:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed
        transport, conf = self.transport, self.app.conf
        bootstrap = faust_aiokafka.server_list(transport.url, transport.default_port)
        auth = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
        return await fetched_end_offsets(bootstrap, listed, **auth)


async def fetched_end_offsets(bootstrap, listed: Mapping, timeout: float = 5.0, **auth) -> dict:
    """{tp: end}: each listed end raised to the high watermark of one fetch from there.

    A consumer of its own (no group) so the worker's positions are not touched; it reads at
    most the few records past the listed end. `auth`: the worker's TLS / SASL settings."""
    if not listed:
        return {}
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp in listed}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=10, **auth)
    await consumer.start()
    try:
        consumer.assign(list(tps))
        for tp, original in tps.items():
            consumer.seek(tp, max(listed[original] or 0, 0))
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            await consumer.getmany(*tps, timeout_ms=100)
        ends = {}
        for tp, original in tps.items():
            known = [end for end in (listed[original], consumer.highwater(tp)) if end is not None]
            ends[original] = max(known) if known else None
        return ends
    finally:
        await consumer.stop()


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp):
        """Commit nothing while the record at the committed offset is not done. Faust's own
        check (`min(acked) - committed > 1`) lets one unacknowledged record at the head through,
        and it is then never read again; see agents.rebalance for how that record came about.
        (A committed offset of None or -1, nothing committed yet, is left to Faust's check.)"""
        acked, committed = self._acked[tp], self._committed_offset[tp]
        if acked and committed is not None and committed >= 0 and min(acked) > committed and not any(
                gap.begin <= committed < gap.end for gap in self._gap[tp]):
            return None
        return super()._new_offset(tp)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
