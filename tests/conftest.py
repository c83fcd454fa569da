"""Shared fixtures: one broker per session (a switch chooses which), a fresh topic prefix per test.

    pytest                          the embedded Tansu broker (default)
    pytest --broker kafka           Apache Kafka itself (KRaft, on this machine's Java; devstack.kafka)
    pytest --broker docker          testcontainers' Apache Kafka (skipped where Docker is absent)
    pytest --broker HOST:PORT       any running Kafka-protocol broker
    pytest --broker embedded,kafka  tests marked `every_broker` on each, `last_broker` on the last
                                    (Kafka), the rest on the first (Tansu)
(or LOOPLINE_TEST_BROKER=...). The integration tests run unchanged on each. `make test` runs
`--broker embedded,kafka`: where Java or Maven is missing, the Kafka runs skip with that reason
outside CI and fail in CI.

    pytest --shuffle                the tests of each file in tests/unit and tests/k8s in a random
                                    order (the seed is in the header; LOOPLINE_TEST_SEED=N repeats
                                    it): `make test` does, so a test that needs another to run
                                    first fails somewhere. Integration files share a stack per
                                    module and keep their order.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid

import pytest

KAFKA_IMAGE = "apache/kafka:3.9.1"


def pytest_addoption(parser):
    parser.addoption("--broker", default=os.environ.get("LOOPLINE_TEST_BROKER", "embedded"),
                     help="embedded | kafka | docker | HOST:PORT, or a comma list (see tests/conftest.py)")
    parser.addoption("--shuffle", action="store_true",
                     help="shuffle the tests of each file in tests/unit and tests/k8s (LOOPLINE_TEST_SEED repeats)")


SHUFFLED = ("tests/unit/", "tests/k8s/")
SEED_ENV = "LOOPLINE_TEST_SEED"


def pytest_configure(config):
    # The seed is drawn once, before xdist starts its workers: they inherit the environment, and
    # they must all collect the same order.
    if config.getoption("--shuffle", default=False) and not os.environ.get(SEED_ENV):
        os.environ[SEED_ENV] = str(random.randrange(1 << 32))


def pytest_report_header(config):
    if config.getoption("--shuffle", default=False):
        return f"shuffled tests/unit and tests/k8s with {SEED_ENV}={os.environ[SEED_ENV]}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # `-q` hides the header: the seed that repeats a failing order goes at the end too.
    if config.getoption("--shuffle", default=False):
        terminalreporter.write_line(f"shuffled tests/unit and tests/k8s with {SEED_ENV}={os.environ[SEED_ENV]}")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--shuffle", default=False):
        return
    rng = random.Random(int(os.environ[SEED_ENV]))
    by_file: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(SHUFFLED):
            by_file.setdefault(path, []).append(index)
    for places in by_file.values():             # within each file: loadfile keeps files whole
        tests = [items[i] for i in places]
        rng.shuffle(tests)
        for place, item in zip(places, tests):
            items[place] = item


def pytest_generate_tests(metafunc):
    """`bootstrap` is parametrized by broker: each one for `every_broker` tests, the last for
    `last_broker` tests, else the first. `make test` splits the broker-bound files this way to
    stay within its time budget: the README's Tests section says which run where."""
    if "bootstrap" not in metafunc.fixturenames:
        return
    brokers = [b.strip() for b in metafunc.config.getoption("--broker").split(",") if b.strip()]
    if metafunc.definition.get_closest_marker("last_broker") is not None:
        brokers = brokers[-1:]
    elif metafunc.definition.get_closest_marker("every_broker") is None:
        brokers = brokers[:1]
    metafunc.parametrize("bootstrap", brokers, indirect=True, scope="session")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def require(reason: str | None, needed_for: str) -> None:
    """A service a test needs cannot run here (`reason`): a failure in CI, where `make test`
    installs everything, and a skip with the reason elsewhere (a laptop without Java, say)."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI needs {needed_for}: {reason}", pytrace=False)
    pytest.skip(reason)


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
    choice = request.param
    if choice == "embedded":
        from streams.broker import EmbeddedBroker

        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_path=log) as broker:
            yield broker.bootstrap
    elif choice == "kafka":
        from devstack import kafka

        require(kafka.unavailable(), "Apache Kafka for the every_broker tests")
        log = tmp_path_factory.mktemp("kafka") / "kafka.log"
        with kafka.ApacheKafka(log_path=log) as broker:
            yield broker.bootstrap
    elif choice == "docker":
        with docker_kafka() as container:
            yield container.get_bootstrap_server()
    else:
        yield choice


@pytest.fixture
def prefix() -> str:
    """A fresh topic namespace (and consumer group) per test, on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}"
