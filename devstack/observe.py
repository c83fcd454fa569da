"""Watches every topic of the loop from outside, the way an operator (or a test) sees it.

A plain kafka-python consumer with no group reads all topics of one prefix and keeps the
decoded events in arrival order, with helpers to wait for a condition. The demo draws its live
view from it; the integration tests assert on it. It never joins the worker's group, so it
changes nothing it watches.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from streams.codec import Decoded, DecodeError, decode
from streams.deadletter import DeadLetter
from streams.topics import Topics


class Observer:
    def __init__(self, bootstrap: str, topics: Topics, from_beginning: bool = True,
                 roles: Iterable[str] | None = None, **config):
        self.bootstrap, self.topics = bootstrap, topics
        self.config = config            # more kafka-python settings (security)
        self.from_beginning = from_beginning
        # Only these topic roles (None: all but the re-key topics, which hold copies of input
        # events, agents.rekey). A benchmark watching 100k events/s would spend its own CPU
        # decoding them here, next to the worker it measures.
        wanted = None if roles is None else {r.replace("_", "-") for r in roles}
        if wanted is None:
            wanted = {spec.role for spec in topics.all().values()} - {"inputs-rekeyed", "operator-rekeyed"}
        self.names = [n for n, spec in topics.all().items() if spec.role in wanted]
        self.events: list[Decoded] = []
        self.dead_letters: list[DeadLetter] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="observer")

    def start(self) -> "Observer":
        self._thread.start()
        self._ready.wait(15)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> "Observer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                 auto_offset_reset="earliest" if self.from_beginning else "latest",
                                 fetch_max_wait_ms=20, enable_auto_commit=False, **self.config)
        consumer.subscribe(self.names)
        try:
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=100)
                self._ready.set()
                for records in batch.values():
                    for record in records:
                        self._add(record)
        finally:
            consumer.close()

    def _add(self, record) -> None:
        with self.cond:
            if record.topic == self.topics.deadletter:
                self.dead_letters.append(DeadLetter.from_record(record.key, record.value, record.headers))
            else:
                try:
                    self.events.append(decode(record.value, record.headers, max_bytes=1 << 30))
                except DecodeError:
                    return                      # the worker dead-letters it; we only watch
            self.cond.notify_all()

    # --- queries --------------------------------------------------------------------------------
    def of_type(self, event_type: str, model: str | None = None) -> list[Decoded]:
        with self.cond:
            return [d for d in self.events
                    if d.event.type == event_type and (model is None or d.event.subject == model)]

    def wait_for(self, predicate: Callable[["Observer"], object], timeout: float,
                 what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self.cond.wait(min(left, 0.5))
