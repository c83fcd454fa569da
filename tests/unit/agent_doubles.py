"""Stand-ins for the two Faust parts an agent touches, so agents run with their real Context
and Edge and no broker: the producer records what would be published, and a table is a dict
that knows which of its writes a producer flush has made durable."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

from agents.context import AppOptions, Context
from streams.codec import decode
from streams.topics import Topics

TOPICS = Topics("t", 2)


class Table(dict):
    """A Faust table: writes reach its changelog only when the producer is flushed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.durable: dict = copy.deepcopy(dict(self))

    def flushed(self) -> None:
        self.durable = copy.deepcopy(dict(self))


class Producer:
    def __init__(self, *tables: Table):
        self.tables = list(tables)
        self.sent: list[tuple[str, bytes]] = []
        self.partitions: list[int | None] = []      # as asked for, one per send
        self.keys: list[bytes | None] = []          # one per send
        self.headers: list[list] = []               # one per send
        self.durable_at_send: list[dict] = []     # each table's durable state when a send went out
        self.unacked: list[tuple[str, bytes]] = []  # fire-and-forget sends (`send`): no ack awaited

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):
        self.sent.append((topic, value))
        self.partitions.append(partition)
        self.keys.append(key)
        self.headers.append(list(headers or ()))
        self.durable_at_send.append([copy.deepcopy(t.durable) for t in self.tables])

    async def send(self, topic, key, value, partition, timestamp, headers):
        """Faust's `send`: the record is handed over, the ack is a future nobody awaits here."""
        self.unacked.append((topic, value))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked

    async def flush(self) -> None:
        for table in self.tables:
            table.flushed()

    def events(self, topic: str) -> list:
        """What went to `topic`, acked or not (each list in the order sent)."""
        return [decode(value).event for t, value in self.sent + self.unacked if t == topic]


def context(models, *tables: Table, group: str = "g") -> Context:
    app = SimpleNamespace(producer=Producer(*tables))
    return Context(app, AppOptions(broker="-", group=group, topics=TOPICS), models, {}, registry=None)


class PublishedLog:
    """A topic as the `Producer` double received it, read back the way a restore reads the
    broker (the experiment folder's `StateReader`): the newest value per key of a partition.
    Only sends with an explicit partition are on a partition here."""

    def __init__(self, producer: Producer, topic: str):
        self.producer, self.topic = producer, topic

    def newest(self, partition: int, models: set[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for (topic, value), asked, key in zip(self.producer.sent, self.producer.partitions,
                                              self.producer.keys):
            if topic == self.topic and asked == partition and key is not None:
                out[key.decode()] = value
        return out
