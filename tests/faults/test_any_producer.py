"""Producers that are not loopline's: data events for one model published keyless, keyed by
anything, on every partition and by librdkafka's default partitioner, while one of two workers
is SIGKILLed and restarted. The model keeps one state: every event is counted into exactly one
training request, its rows once, and never are two of its trainings in flight."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import yaml

from devstack.stack import REPO, LocalStack, Process
from agents.trigger import state_changelog
from loopline.commands.snapshot import read_records
from streams import events as ev
from streams.codec import build, encode, encode_headers
from tests.faults.invariants import assert_nothing_lost_nothing_doubled, requests_by_key
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.last_broker]   # make test: on Apache Kafka

MODEL = "m0"
PARTITIONS = 4
FINISHED = (ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE)


def write_models(path):
    """One model, retrained on every new batch by a step that fails at once: each batch that
    arrives while a training is in flight must wait for its end (the one-in-flight rule)."""
    path.write_text(yaml.safe_dump({"models": [{
        "name": MODEL,
        "pipeline": {"workdir": str(REPO), "steps": [
            {"name": "evaluate", "command": ["python", "-c", "raise SystemExit(1)"]}]},
        "retrain": {"min_new_rows": 1}}]}))
    return path


def stream_any_how(stack: LocalStack, count: int, per_second: float, sent: dict) -> threading.Thread:
    """Data events the way clients other than loopline send them, in turn: kafka-python keyless
    (a random partition), kafka-python on an explicit partition (each in turn) with no key or a
    random one, and confluent-kafka's default partitioner (CRC32 of the key, not murmur2) keyed
    by the model name or at random. `sent`: event key -> (rows, the partition it landed on)."""
    from confluent_kafka import Producer as LibrdkafkaProducer
    from kafka import KafkaProducer

    topic = stack.settings.topics.data

    def run():
        java_like = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=0)
        librdkafka = LibrdkafkaProducer({"bootstrap.servers": stack.bootstrap, "linger.ms": 0})
        try:
            for i in range(count):
                event = build(ev.DataArrived(uri=f"file:///data/{MODEL}/{i}.parquet", rows=10 + i,
                                             version=f"b{i}"), MODEL, source="tests/any-producer")
                random_key = uuid.uuid4().hex.encode()
                turn, explicit = i % 4, (i // 4) % PARTITIONS
                if turn == 3:
                    landed: list[int] = []
                    librdkafka.produce(topic, encode(event), MODEL.encode() if i % 8 == 3 else random_key,
                                       on_delivery=lambda err, msg: landed.append(msg.partition()))
                    librdkafka.flush(30)
                    partition = landed[0]
                else:
                    future = java_like.send(topic, encode(event), headers=encode_headers(),
                                            key=random_key if turn == 2 else None,
                                            partition=None if turn == 0 else explicit)
                    partition = future.get(30).partition
                sent[event.key] = (event.data["rows"], partition)
                time.sleep(1 / per_second)
        finally:
            java_like.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def owner_of_the_model(*workers: Process) -> Process:
    """A worker that requested the model's trainings so far: it holds (a copy of) its state."""
    owners = [w for w in workers if f"{MODEL}: training requested" in w.log.read_text(errors="replace")]
    assert owners, "no worker logged a training request"
    return owners[0]


def settled(sent: dict):
    def check(observer) -> bool:
        by_key = requests_by_key(observer)
        covered = set().union(*by_key.values()) if by_key else set()
        finished = {d.data.idempotency_key for t in FINISHED for d in observer.of_type(t)}
        return set(sent) <= covered and set(by_key) <= finished
    return check


def first_times(observer, *types: str) -> dict[str, float]:
    """idempotency key -> the earliest event time of any of `types` for it."""
    out: dict[str, float] = {}
    for t in types:
        for d in observer.of_type(t, MODEL):
            key = d.data.idempotency_key
            out[key] = min(out.get(key, d.event.timestamp), d.event.timestamp)
    return out


def test_a_models_events_from_any_producer_on_any_partition_make_one_state(tmp_path, bootstrap, prefix):
    with LocalStack(tmp_path / "state", write_models(tmp_path / "loopline.yaml"), bootstrap=bootstrap,
                    prefix=prefix, partitions=PARTITIONS,
                    extra_env={"LOOPLINE_SESSION_TIMEOUT": "6"}) as stack:
        topics, home = stack.settings.topics, stack.settings.topics.partition_of(MODEL)
        second = stack.start_worker("worker-2")
        stack.wait_ready(worker=second)
        sent: dict = {}
        producer = stream_any_how(stack, 60, 6, sent)
        wait_until(lambda: len(sent) >= 15 and stack.observer.of_type(ev.TrainingRequested.TYPE), 30,
                   "the stream to be a quarter through and a training requested")
        killed = owner_of_the_model(stack.worker, second)
        killed.kill()                                   # SIGKILL the worker holding the state
        wait_until(lambda: len(sent) >= 35, 30, "the stream to go on while it is down")
        killed.restart()
        producer.join(60)
        assert len(sent) == 60
        stack.observer.wait_for(settled(sent), 120, "every event in a request, every request ended")

        observer = stack.observer
        assert_nothing_lost_nothing_doubled(observer, set(sent), stack.state_dir / "runs")
        requests = {d.data.idempotency_key: d.data for d in observer.of_type(ev.TrainingRequested.TYPE)}
        assert sum(r.rows for r in requests.values()) == sum(rows for rows, _ in sent.values())

        # One training in flight at a time: each request after the end of the one before it.
        asked, ended = first_times(observer, ev.TrainingRequested.TYPE), first_times(observer, *FINISHED)
        order = sorted(asked, key=asked.get)
        overlaps = [(a, b) for a, b in zip(order, order[1:]) if ended[a] > asked[b]]
        assert not overlaps, f"requested while the one before was in flight: {overlaps}"

        # Off-partition events took the re-key hop; events on the model's partition did not.
        off_home = {key for key, (_, partition) in sent.items() if partition != home}
        assert off_home and off_home != set(sent), "the producers covered no or every partition"
        rekeyed = {"{source}#{id}".format(**json.loads(r.value))
                   for r in read_records(stack.bootstrap, [topics.inputs_rekeyed])}
        assert rekeyed == off_home

        # Every write of the model's state went to the changelog partition of its partition.
        writes = [r for r in read_records(stack.bootstrap, [state_changelog(stack.settings.group)])
                  if r.key is not None and json.loads(r.key) == MODEL]
        assert writes and {r.partition for r in writes} == {home}
