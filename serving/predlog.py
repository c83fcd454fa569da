"""The serving endpoint's prediction log and feedback: the bus side of online monitoring.

Every prediction gets an id. What was predicted (input row, prediction, model version) is
published to `prediction.logged`, where the drift monitor compares it with the version's
reference; a true label sent back for an id is joined here with its prediction and published to
`feedback.received`, which the metric-window agent aggregates.

The hot path never waits for Kafka: sends are asynchronous (kafka-python batches them in its own
thread, `linger_ms` small) and errors are logged from the send's callback; no flush per request.
The join keeps the newest `capacity` predictions in memory: feedback for an older (or another
replica's) prediction is refused with a clear 404 instead of being guessed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from streams import events as ev
from streams.codec import build, encode, encode_headers
from streams.topics import Topics

log = logging.getLogger("loopline.serving")
CHUNK = 500                 # rows per PredictionLogged event (keeps events far below 1 MB)


class UnknownPrediction(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class PredictionLog:
    def __init__(self, bootstrap: str, topics: Topics, source: str = "loopline/serving",
                 capacity: int = 100_000, producer=None, **config):
        """`config`: more kafka-python producer settings (security: KafkaSecurity.kafka_python())."""
        from kafka import KafkaProducer

        self.topics, self.source, self.capacity = topics, source, capacity
        self.producer = producer or KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                                                  **config)
        self.lock = threading.Lock()
        self.recent: OrderedDict[str, tuple[str, str, Any, float]] = OrderedDict()
        self.errors = 0

    def _send(self, event) -> None:
        future = self.producer.send(self.topics.for_type(event.type), key=event.subject.encode(),
                                    value=encode(event), headers=encode_headers())
        future.add_errback(self._failed, event.type)

    def _failed(self, exc, event_type) -> None:
        self.errors += 1
        log.warning("serving: %s not published: %s", event_type, exc)

    def log(self, model: str, version: str, rows: list[dict], predictions: list) -> list[str]:
        """Ids for the predictions of one call; the log is sent in the background."""
        base, now = uuid.uuid4().hex[:16], time.time()
        ids = [f"{base}-{i}" for i in range(len(rows))]
        with self.lock:
            for pid, prediction in zip(ids, predictions):
                self.recent[pid] = (model, version, prediction, now)
            while len(self.recent) > self.capacity:
                self.recent.popitem(last=False)
        for start in range(0, len(rows), CHUNK):
            end = start + CHUNK
            self._send(build(ev.PredictionLogged(
                model_version=version, prediction_ids=ids[start:end], features=rows[start:end],
                predictions=predictions[start:end]), model, source=self.source))
        return ids

    def feedback(self, model: str, prediction_id: str, label) -> ev.FeedbackReceived:
        with self.lock:
            known = self.recent.get(prediction_id)
        if known is None or known[0] != model:
            raise UnknownPrediction(f"no recent prediction {prediction_id!r} of model {model!r} "
                                    f"(this endpoint keeps the newest {self.capacity})")
        _, version, prediction, at = known
        data = ev.FeedbackReceived(prediction_id=prediction_id, model_version=version,
                                   label=label, prediction=prediction, predicted_at=at)
        self._send(build(data, model, source=self.source))
        return data

    def close(self) -> None:
        self.producer.flush(5)
        self.producer.close(5)
