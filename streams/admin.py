"""Creates every topic of the loop explicitly, with its declared partition count, at start-up.

Auto-created topics get the broker's default partition count, and a Faust table whose source
topic and changelog disagree fails at recovery: so nothing relies on auto-create. An existing
topic with a different partition count is an error worth stopping for, not a warning.
"""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.topics import Topics


class TopicMismatch(RuntimeError):
    pass


def ensure_topics(bootstrap: str, topics: Topics, *, timeout: float = 30.0,
                  **client_config) -> dict[str, int]:
    """Create the missing topics and check the existing ones; returns name -> partitions."""
    admin = _connect(bootstrap, timeout, client_config)
    try:
        wanted = {name: spec for name, spec in topics.all().items()}
        existing = set(admin.list_topics())
        new = [NewTopic(name, topics.partitions, 1,
                        topic_configs={"retention.ms": str(spec.retention_ms)} if spec.retention_ms else {})
               for name, spec in wanted.items() if name not in existing]
        for topic in new:  # one by one: a concurrent creator makes only its own topic fail
            try:
                admin.create_topics([topic], timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                pass
        return _check_partitions(admin, wanted, topics.partitions, time.monotonic() + timeout)
    finally:
        admin.close()


def _connect(bootstrap: str, timeout: float, config: dict) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, **config)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _check_partitions(admin: KafkaAdminClient, wanted, partitions: int, deadline: float) -> dict[str, int]:
    """Partition counts once every topic is visible; a count other than `partitions` is an error.

    Apache Kafka creates a topic in its controller and tells the brokers' metadata caches a
    moment later: a describe right after the create may not know the topic yet (no partitions,
    UNKNOWN_TOPIC_OR_PARTITION). That is "not yet", not a mismatch, so it is asked again.
    """
    while True:
        found, unseen = {}, []
        for meta in admin.describe_topics(list(wanted)):
            name = meta.get("name") or meta.get("topic")
            if meta.get("error_code") or not meta["partitions"]:
                unseen.append(name)
            else:
                found[name] = len(meta["partitions"])
        if not unseen:
            break
        if time.monotonic() > deadline:
            raise TopicMismatch(f"topics created but not visible in the broker's metadata: {sorted(unseen)}")
        time.sleep(0.1)   # the metadata cache catches up within a few hundred ms
    wrong = {name: n for name, n in found.items() if n != partitions}
    if wrong:
        raise TopicMismatch(f"topics exist with a partition count other than {partitions}: {wrong}")
    return found
