"""What serving publishes: prediction logs, shadow pairs and feedback.

- `PredictionLogged` (the drift monitor compares it with the version's reference) and
  `ShadowPredicted` (the challenger's answers beside the champion's) are built, encoded and sent
  by a background thread: the hot path only enqueues, never waits for Kafka or even for the
  encoding. If the broker is gone long enough for `max_pending` events to pile up, newer ones
  are dropped and counted (`dropped`) rather than growing memory without bound.
- `FeedbackReceived` is sent and waited for (`feedback()`): a 202 means the label is on the bus.
  No join happens here: what the event needs comes from the verified prediction id
  (`serving.ids`), so any replica takes feedback for any prediction.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from streams import events as ev
from streams.codec import build, encode, encode_headers
from streams.topics import Topics

log = logging.getLogger("loopline.serving")
CHUNK = 500                 # rows per PredictionLogged event (keeps events far below 1 MB)
_STOP = object()


class PredictionLog:
    def __init__(self, bootstrap: str, topics: Topics, source: str = "loopline/serving",
                 producer=None, max_pending: int = 100_000, **config):
        """`config`: more kafka-python producer settings (security: KafkaSecurity.kafka_python())."""
        from kafka import KafkaProducer

        self.topics, self.source, self.max_pending = topics, source, max_pending
        self.producer = producer or KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                                  **config)
        self.errors = 0                 # sends the broker refused or that timed out
        self.dropped = 0                # events never sent: the queue was full
        self.pending = queue.Queue(maxsize=max_pending)
        self.sender = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self.sender.start()

    # -- background: prediction log and shadow pairs ----------------------------------------------

    def log(self, model: str, version: str, rows: list[dict], predictions: list,
            ids: list[str] | None = None) -> list[str]:
        """Queue the log of one call; its ids (unsigned ones made here when none are given)."""
        if ids is None:
            base = uuid.uuid4().hex[:16]
            ids = [f"{base}-{i}" for i in range(len(rows))]
        self._enqueue(("log", model, version, rows, predictions, ids))
        return ids

    def shadow(self, model: str, experiment: str, champion_version: str, challenger_version: str,
               ids: list[str], champion: list, challenger: list) -> None:
        self._enqueue(("shadow", model, ev.ShadowPredicted(
            experiment=experiment, champion_version=champion_version,
            challenger_version=challenger_version, prediction_ids=ids, champion=champion,
            challenger=challenger)))

    def _enqueue(self, item: tuple) -> None:
        try:
            self.pending.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        while (item := self.pending.get()) is not _STOP:
            try:
                if item[0] == "log":
                    _, model, version, rows, predictions, ids = item
                    for start in range(0, len(rows), CHUNK):
                        end = start + CHUNK
                        self._send(build(ev.PredictionLogged(
                            model_version=version, prediction_ids=ids[start:end], features=rows[start:end],
                            predictions=predictions[start:end]), model, source=self.source))
                else:
                    self._send(build(item[2], item[1], source=self.source))
            except Exception as exc:  # noqa: BLE001 - e.g. a row that is not JSON: log, go on
                self.errors += 1
                log.warning("serving: %s not published: %s", item[0], exc)

    def _send(self, event):
        future = self.producer.send(self.topics.for_type(event.type), key=event.subject.encode(),
                                    value=encode(event), headers=encode_headers())
        future.add_errback(self._failed, event.type)
        return future

    def _failed(self, exc, event_type) -> None:
        self.errors += 1
        log.warning("serving: %s not published: %s", event_type, exc)

    # -- acknowledged: feedback -------------------------------------------------------------------

    def feedback(self, model: str, items: list[ev.FeedbackReceived], timeout: float = 10.0) -> None:
        """Publish and wait for the broker's acknowledgement of every one (blocking: call it in a
        thread). Raises what the producer raised if any was not acknowledged."""
        futures = [self._send(build(data, model, source=self.source)) for data in items]
        for future in futures:
            future.get(timeout=timeout)

    def close(self) -> None:
        self.pending.put(_STOP)
        self.sender.join(10)
        self.producer.flush(5)
        self.producer.close(5)
