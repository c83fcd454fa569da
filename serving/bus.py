"""The replica's view of the bus: deployments and experiment states, in a consumer thread.

A kafka-python consumer with manually assigned partitions (no group: every replica reads
everything) follows `deployment.status` from its end (the registry says who the champion is at
start) and `experiment.state` from far enough back to find the newest state per model: the
worker re-publishes a live experiment every 60 s, so `READ_BACK_SECONDS` (120 s) back is enough,
found with `offsets_for_times`; where that fails or finds nothing, the partition is read from its
beginning (the topic is retained for days, states are small). What was read back is handed over
once, newest per model, then every record as it comes. A replica killed and restarted therefore
routes with the same state (weights, posteriors) as its peers.

Events are handed to the event loop with `call_soon_threadsafe`; nothing here touches the store.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Collection

from streams.codec import DecodeError, decode
from streams.events import DeploymentDone, DeploymentRolledBack, ExperimentUpdated
from streams.topics import Topics

log = logging.getLogger("loopline.serving")
READ_BACK_SECONDS = 120.0


class Follower(threading.Thread):
    def __init__(self, bootstrap: str, topics: Topics, models: Collection[str], *,
                 deliver: Callable[..., None], stop: threading.Event,
                 read_back_seconds: float = READ_BACK_SECONDS, **config):
        """`deliver(kind, *args)`: called in this thread; "following" (deployments positioned),
        "deployment" (model, version, alias), "experiment" (model, ExperimentUpdated, live),
        "caught_up"."""
        super().__init__(name="bus-follower", daemon=True)
        self.bootstrap, self.topics, self.models, self.deliver = bootstrap, topics, models, deliver
        self.stop, self.read_back_seconds, self.config = stop, read_back_seconds, config

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except Exception:  # noqa: BLE001 - reconnect rather than serve a frozen view
                log.exception("serving: bus follower failed; starting over in 1s")
                self.stop.wait(1.0)

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 fetch_max_wait_ms=50, **self.config)
        try:
            deployments = self._partitions(consumer, self.topics.deployment, TopicPartition)
            states = self._partitions(consumer, self.topics.experiment, TopicPartition)
            consumer.assign(deployments + states)
            consumer.seek_to_end(*deployments)
            for tp in deployments:
                consumer.position(tp)           # resolve the lazy seek now: nothing after is missed
            self.deliver("following")
            ends = consumer.end_offsets(states)
            self._seek_back(consumer, states)
            newest: dict[str, ExperimentUpdated] = {}
            behind = {tp for tp in states if consumer.position(tp) < ends[tp]}
            while behind and not self.stop.is_set():
                self._poll(consumer, newest)
                behind = {tp for tp in behind if consumer.position(tp) < ends[tp]}
            for model, state in newest.items():
                self.deliver("experiment", model, state, False)
            self.deliver("caught_up")
            log.info("serving: experiment states read back (%d live model(s)); following", len(newest))
            while not self.stop.is_set():
                self._poll(consumer, None)
        finally:
            consumer.close()

    def _partitions(self, consumer, topic: str, TopicPartition) -> list:
        while True:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return [TopicPartition(topic, p) for p in sorted(partitions)]
            if self.stop.wait(0.5):
                raise RuntimeError("stopped")
            log.info("serving: waiting for topic %s", topic)

    def _seek_back(self, consumer, states: list) -> None:
        since = int((time.time() - self.read_back_seconds) * 1000)
        try:
            found = consumer.offsets_for_times({tp: since for tp in states})
        except Exception as exc:  # noqa: BLE001 - an old broker or one without the API: the beginning
            log.info("serving: offsets_for_times failed (%s): reading experiment.state from the start", exc)
            found = {}
        for tp in states:
            hit = found.get(tp)
            if hit is None or hit.timestamp < 0:     # Tansu answers "not found" as offset 0, ts -1
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, hit.offset)

    def _poll(self, consumer, newest: dict | None) -> None:
        """One poll; `newest`: collect states (read-back) instead of delivering them live."""
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                model = record.key.decode(errors="replace") if record.key else None
                if model is not None and model not in self.models:
                    continue                    # another team's model: not even decoded
                try:
                    decoded = decode(record.value, record.headers)
                except DecodeError as exc:
                    log.debug("serving: skipped a record on %s: %s", record.topic, exc)
                    continue
                data, subject = decoded.data, decoded.event.subject
                if subject not in self.models:
                    continue
                if isinstance(data, ExperimentUpdated):
                    if newest is not None:
                        newest[subject] = data
                    else:
                        self.deliver("experiment", subject, data, True)
                elif isinstance(data, (DeploymentDone, DeploymentRolledBack)):
                    self.deliver("deployment", subject, data.version, data.alias)
