"""The experiment folder on a real broker, behind the real batch consumer: feedback becomes
published per-arm counts, and a worker that dies and starts over counts nothing twice."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from agents.batch import BatchConsumer
from agents.context import AppOptions, Context
from agents.experiments import ExperimentFolder
from agents.policy.metric import MetricPolicy
from agents.policy.rollout import RolloutPolicy
from streams import events as ev
from streams.admin import ensure_topics
from streams.codec import build, decode, encode, encode_headers
from streams.topics import Topics
from tests.waiting import wait_until

MODEL = "clf"
# Held: a step lasts an hour, so nothing but counting happens in this test.
CANARY = RolloutPolicy(strategy="canary", min_step_seconds=3600, max_step_seconds=7200)


class Producer:
    """aiokafka's producer with the Faust producer's call, which `agents.edge` makes."""

    def __init__(self, bootstrap: str):
        self.inner = AIOKafkaProducer(bootstrap_servers=bootstrap)

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):
        await self.inner.send_and_wait(topic, value, key=key, partition=partition, headers=headers)


class Worker:
    """One worker's experiment folder: its batch consumer on an event loop of its own thread."""

    def __init__(self, bootstrap: str, topics: Topics, group: str):
        self.bootstrap, self.topics, self.group = bootstrap, topics, group
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _main(self) -> None:
        producer = Producer(self.bootstrap)
        await producer.inner.start()
        opts = AppOptions(broker=self.bootstrap, group=self.group, topics=self.topics)
        models = {MODEL: SimpleNamespace(metrics=MetricPolicy(floor=0.5), rollout=CANARY)}
        ctx = Context(SimpleNamespace(producer=producer), opts, models, {}, registry=None)
        consumer = BatchConsumer(
            bootstrap=self.bootstrap, group=f"{self.group}-experiments",
            topics=[self.topics.feedback, self.topics.rollout, self.topics.deployment, self.topics.shadow],
            handler=ExperimentFolder(ctx), rebalance_timeout=2.0, session_timeout=6.0)
        self.loop, self.task = asyncio.get_running_loop(), asyncio.ensure_future(consumer.run())
        self.ready.set()
        try:
            await asyncio.gather(self.task, return_exceptions=True)
        finally:
            await producer.inner.stop()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)
        assert not self.thread.is_alive()


class States:
    """Every ExperimentUpdated on the experiment topic so far, in order."""

    def __init__(self, bootstrap: str, topics: Topics):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = [TopicPartition(topics.experiment, p) for p in range(topics.partitions)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.seen: list[dict] = []

    def read(self) -> list[dict]:
        for records in self.consumer.poll(timeout_ms=200).values():
            self.seen += [decode(r.value, r.headers).data.model_dump() for r in records]
        return self.seen

    def newest_counts(self) -> tuple[int, ...] | None:
        states = self.read()
        return tuple(a["n"] for a in states[-1]["arms"]) if states else None


def test_counts_are_published_and_a_restarted_worker_counts_nothing_twice(bootstrap, prefix):
    topics = Topics(prefix, 2)
    ensure_topics(bootstrap, topics)
    producer = KafkaProducer(bootstrap_servers=bootstrap)   # keyed by model: murmur2, as serving

    def send(*events) -> None:
        for event in events:
            producer.send(topics.for_type(event.type), encode(event), key=MODEL.encode(),
                          headers=encode_headers())
        producer.flush()

    def feedback(version: str, count: int, first: int):
        return [build(ev.FeedbackReceived(prediction_id=f"{version}-{first + i}", model_version=version,
                                          label=1, prediction=int(i % 4 != 0), experiment="exp-1"),
                      MODEL, source="serving") for i in range(count)]

    send(build(ev.RolloutStarted(experiment="exp-1", strategy="canary", champion_version="1",
                                 challenger_versions=["2"]), MODEL, source="deployer"))
    send(*feedback("1", 200, 0), *feedback("2", 200, 0))
    states = States(bootstrap, topics)
    first = Worker(bootstrap, topics, f"{prefix}-worker")
    wait_until(lambda: states.newest_counts() == (200, 200), timeout=20,
               what="the published state to count all 400 labelled predictions")
    first.stop()
    before = len(states.read())
    counted = states.seen[-1]
    assert counted["arms"][0]["reward_sum"] == 150 and counted["offsets"]  # 3 in 4 right

    # A crash before anything was committed (a new consumer group): all of it is read again.
    second = Worker(bootstrap, topics, f"{prefix}-restarted")
    try:
        wait_until(lambda: len(states.read()) > before, timeout=20,
                   what="the restarted worker to publish the restored state")
        assert states.newest_counts() == (200, 200)
        send(*feedback("2", 50, 200))
        wait_until(lambda: states.newest_counts() == (200, 250), timeout=10,
                   what="the restarted worker to count new feedback")
    finally:
        second.stop()
        producer.close()
    assert all(sum(a["n"] for a in s["arms"]) <= 450 for s in states.seen)   # never doubled
    assert states.seen[-1]["arms"][1]["reward_sum"] == 150 + sum(i % 4 != 0 for i in range(50))
