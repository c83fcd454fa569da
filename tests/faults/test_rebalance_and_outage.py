"""Workers die and the broker freezes while events flow: every event still leads to exactly
one training request, and no idempotency key is launched twice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from loopline.commands.snapshot import read_records
from devstack.stack import REPO, LocalStack
from streams import events as ev
from streams.broker import free_port
from streams.codec import build
from streams.publisher import Publisher
from tests.faults.invariants import (assert_nothing_lost_nothing_doubled, unrequested,
                                     unstarted)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

MODELS = [f"m{i}" for i in range(6)]


def write_models(path):
    """Six models (spread over the partitions), each trained by a step that fails at once:
    the test is about the flow of events, not about training."""
    path.write_text(yaml.safe_dump({"models": [{
        "name": name,
        "pipeline": {"workdir": str(REPO), "steps": [
            {"name": "evaluate", "command": ["python", "-c", "raise SystemExit(1)"]}]},
        "retrain": {"min_new_rows": 100}} for name in MODELS]}))
    return path


def stream_events(stack: LocalStack, count: int, per_second: float, sent: set) -> threading.Thread:
    def run():
        with Publisher(stack.bootstrap, stack.settings.topics, retries=10) as publisher:
            for i in range(count):
                model = MODELS[i % len(MODELS)]
                event = build(ev.DataArrived(uri=f"file:///data/{model}/{i}.parquet", rows=100,
                                             version=f"b{i}"), model, source="tests/stream")
                publisher.send(event)
                sent.add(event.key)
                time.sleep(1 / per_second)
            publisher.flush(60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_all_handled(stack: LocalStack, sent: set, timeout: float) -> set:
    """Wait until every sent event led to a request the trainer answered, then until one more
    event per model did: behind the others on its model's partitions, its request and start come
    after any duplicate a redelivery made. Returns the keys of all events, these last ones too."""
    def handled(keys: set) -> None:
        try:
            stack.observer.wait_for(lambda o: not unrequested(o, keys), timeout,
                                    "every event to lead to a training request")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{where(stack, unrequested(stack.observer, keys))}") from exc
        stack.observer.wait_for(lambda o: not unstarted(o), timeout,
                                "every training request to reach the trainer")

    handled(sent)
    last = [build(ev.DataArrived(uri=f"file:///data/{model}/last.parquet", rows=100, version="last"),
                  model, source="tests/last") for model in MODELS]
    with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
        for event in last:
            publisher.publish(event)
    handled({event.key for event in last})
    return sent | {event.key for event in last}


def where(stack: LocalStack, keys: set) -> str:
    """Where the never-requested events are, and how far the worker group has committed."""
    from kafka import KafkaConsumer, TopicPartition

    data = stack.settings.topics.data
    records = read_records(stack.bootstrap, [data])
    found = sorted(f"[{r.partition}]@{r.offset}" for r in records
                   if "{source}#{id}".format(**json.loads(r.value)) in keys)
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=stack.settings.group,
                             enable_auto_commit=False)
    try:
        committed = {p: consumer.committed(TopicPartition(data, p))
                     for p in sorted({r.partition for r in records})}
    finally:
        consumer.close()
    return f"{data}: never requested {found}; the group's committed offsets {committed}"


def readyz(port: int, path: str = "/readyz") -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_a_worker_killed_and_restarted_mid_stream_loses_and_doubles_nothing(tmp_path, bootstrap, prefix):
    with LocalStack(tmp_path / "state", write_models(tmp_path / "loopline.yaml"), bootstrap=bootstrap,
                    prefix=prefix, partitions=4,
                    extra_env={"LOOPLINE_SESSION_TIMEOUT": "6"}) as stack:
        second = stack.start_worker("worker-2")
        stack.wait_ready(worker=second)
        sent: set = set()
        producer = stream_events(stack, 120, 15, sent)
        wait_until(lambda: len(sent) >= 30 and stack.observer.of_type(ev.TrainingRequested.TYPE), 30,
                   "the stream to be a quarter through and handled")
        second.kill()                                   # SIGKILL mid-stream
        wait_until(lambda: len(sent) >= 60, 30, "the stream to go on while it is down")
        second.restart()
        producer.join(60)
        assert len(sent) == 120
        everything = wait_all_handled(stack, sent, 120)
        assert_nothing_lost_nothing_doubled(stack.observer, everything, stack.state_dir / "runs")


def test_a_frozen_broker_delays_but_loses_nothing(tmp_path, prefix):
    with LocalStack(tmp_path / "state", write_models(tmp_path / "loopline.yaml"), prefix=prefix,
                    partitions=2) as stack:
        sent: set = set()
        producer = stream_events(stack, 60, 10, sent)
        wait_until(lambda: len(sent) >= 20, 30, "the stream to be under way")
        stack.broker.pause()                            # SIGSTOP for 20 s while events flow
        thawed_at = time.monotonic() + 20
        try:
            wait_until(lambda: readyz(stack.worker.web_port) == 503, 15, "/readyz to report the outage")
            time.sleep(max(0.0, thawed_at - time.monotonic()))     # the outage's length is the scenario
        finally:
            stack.broker.resume()
        producer.join(90)
        everything = wait_all_handled(stack, sent, 120)
        assert readyz(stack.worker.web_port) == 200
        stack.worker.check()                            # it rode the outage out, no restart
        assert_nothing_lost_nothing_doubled(stack.observer, everything, stack.state_dir / "runs")


def test_a_worker_started_without_a_broker_waits_then_exits_non_zero(tmp_path):
    port, web = free_port(), free_port()
    config = write_models(tmp_path / "loopline.yaml")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LOOPLINE_BROKER": f"127.0.0.1:{port}",
           "LOOPLINE_CONFIG": str(config), "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
           "LOOPLINE_WEB_PORT": str(web), "LOOPLINE_BROKER_WAIT_SECONDS": "6"}
    started = time.monotonic()
    worker = subprocess.Popen([sys.executable, "-m", "loopline.cli", "worker"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: readyz(web, "/livez") == 200, 6, "the web server to answer while it waits for Kafka")
    not_ready = readyz(web)
    output, _ = worker.communicate(timeout=60)
    elapsed = time.monotonic() - started

    assert worker.returncode == 3, output
    assert not_ready == 503
    assert f"Kafka at 127.0.0.1:{port} is not reachable" in output
    assert "giving up" in output and "retrying in" in output
    assert 6 <= elapsed < 30
