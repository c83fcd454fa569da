"""Shared fixtures: one broker per session (a switch chooses which), a fresh topic prefix per test.

    pytest                        the embedded Tansu broker (default)
    pytest --broker docker        testcontainers' Apache Kafka (skipped where Docker is absent)
    pytest --broker HOST:PORT     any running Kafka-protocol broker
(or LOOPLINE_TEST_BROKER=...). The integration tests run unchanged on each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

KAFKA_IMAGE = "apache/kafka:3.9.1"


def pytest_addoption(parser):
    parser.addoption("--broker", default=os.environ.get("LOOPLINE_TEST_BROKER", "embedded"),
                     help="embedded | docker | HOST:PORT")


def docker_unavailable_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return "no Docker engine reachable (`docker info` failed: " + \
            (probe.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return None


def docker_kafka():
    """Apache Kafka (KRaft) in a container, or a skip that says why not."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"testcontainers Kafka needs Docker: {reason}")
    from testcontainers.kafka import KafkaContainer

    return KafkaContainer(KAFKA_IMAGE).with_kraft()


@pytest.fixture(scope="session")
def bootstrap(request, tmp_path_factory):
    choice = request.config.getoption("--broker")
    if choice == "embedded":
        from streams.broker import EmbeddedBroker

        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_path=log) as broker:
            yield broker.bootstrap
    elif choice == "docker":
        with docker_kafka() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        yield choice


@pytest.fixture
def prefix() -> str:
    """A fresh topic namespace (and consumer group) per test, on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}"
