"""A rebalance while one of two agents reading a topic still has records buffered completes
(agents.rebalance): before the fix the first worker waited forever for a record the fast agent
had handled and the slow one had buffered, and the group stalled with it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from devstack.stack import REPO

pytestmark = pytest.mark.slow
APP = REPO / "tests" / "fixtures" / "two_readers.py"


class Worker:
    def __init__(self, env: dict, name: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, str(APP), "worker", "-l", "info", "--without-web"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO)
        threading.Thread(target=self._read, daemon=True, name=name).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def handled(self, agent: str) -> set[str]:
        return {line.split()[1] for line in list(self.lines) if line.startswith(f"{agent} ")}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait(predicate, timeout: float, what: str, workers) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n\n".join("\n".join(w.lines[-25:]) for w in workers)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(0.2)


def test_a_rebalance_completes_while_a_slow_reader_still_has_records_buffered(bootstrap, prefix):
    topic = f"{prefix}.outcomes"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    env = {**os.environ, "BROKER": bootstrap, "GROUP": f"{prefix}-readers", "TOPIC": topic}
    values = [str(i) for i in range(8)]
    first = Worker(env, "first")
    workers = [first]
    try:
        wait(lambda: first.count("Worker ready") >= 1, 60, "the first worker to be ready", workers)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for value in values:
            producer.send(topic, value.encode(), partition=int(value) % 2)
        producer.flush()
        producer.close()
        wait(lambda: first.handled("fast") == set(values), 30, "the fast agent to handle all", workers)
        assert len(first.handled("slow")) < len(values) - 2     # the slow one has some buffered

        second = Worker(env, "second")                          # a rebalance, now
        workers.append(second)
        wait(lambda: first.count("Worker ready") >= 2 and second.count("Worker ready") >= 1, 60,
             "both workers to be ready after the rebalance", workers)
        assert first.count("wait_empty: Waiting for tasks") == 0
        wait(lambda: first.handled("slow") | second.handled("slow") == set(values), 60,
             "every record handled by the slow agent (the dropped ones read again)", workers)
    finally:
        for worker in workers:
            worker.stop()
