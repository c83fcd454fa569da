"""A blocking publisher (kafka-python) for the CLI, the demo, jobs and tests.

Keyed by the event's subject (the model name) so one model's events stay in order on one
partition. `publish` waits for the broker's acknowledgement: a CLI that says "published" must
mean it. Inside the Faust worker, agents use Faust's own async producer instead.
"""

from __future__ import annotations

from kafka import KafkaProducer

from streams.codec import encode, encode_headers
from streams.envelope import CloudEvent
from streams.topics import Topics


class Publisher:
    def __init__(self, bootstrap: str, topics: Topics | None = None, **config):
        self.topics = topics or Topics()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                      **config)

    def publish(self, event: CloudEvent, topic: str | None = None, timeout: float = 10.0) -> None:
        self.send(event, topic).get(timeout=timeout)

    def send(self, event: CloudEvent, topic: str | None = None):
        """Asynchronous send; returns the kafka-python future (call `flush()` to wait for all)."""
        return self.producer.send(topic or self.topics.for_type(event.type), key=event.subject.encode(),
                                  value=encode(event), headers=encode_headers())

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None,
                 headers: list[tuple[str, bytes]] | None = None):
        return self.producer.send(topic, key=key, value=value, headers=headers or [])

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
