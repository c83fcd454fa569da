"""Kafka security on Apache Kafka itself: every client over TLS and SASL, every refusal clear.

One broker for the module with, beside its plaintext listener, a mutual-TLS listener, SASL_SSL
and SASL_PLAINTEXT (devstack.kafka, `secure=True`): a test CA made by the harness, SCRAM users
created with Kafka's own storage tool, OAUTHBEARER with Kafka's unsecured test tokens. Each
client family connects with one `KafkaSecurity`, mapped into its own names; set-up and checks
go through the plaintext listener, so a test sees only what the client under test did. A CA
the broker's certificate does not come from, and a wrong password, are refused: one clear line
and exit code 3 from the CLI, the worker and the serving process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition
from confluent_kafka import Consumer, KafkaException
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.errors import KafkaTimeoutError

from agents import transport
from agents.batch import BatchConsumer
from devstack import kafka as harness
from devstack.stack import LocalStack
from devstack.tls import make_certificates
from loopline import cli
from loopline.commands.snapshot import read_events
from serving.predlog import PredictionLog
from streams import events as ev
from streams.admin import ensure_topics
from streams.broker import free_port
from streams.codec import build
from streams.lag import LagProbe
from streams.probe import probe
from streams.publisher import Publisher
from streams.security import KafkaRefused
from streams.topics import Topics
from tests.conftest import require
from tests.integration.loop_harness import MODEL, data_event, outcome_of, write_config
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# (protocol, mechanism) each client family is tried with: mutual TLS, SCRAM over TLS and over
# plaintext, OAUTHBEARER (each family maps the token its own way).
MODES = [("SSL", None), ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
         ("SASL_SSL", "OAUTHBEARER")]
ALL_MODES = MODES + [("SASL_SSL", "PLAIN"), ("SASL_PLAINTEXT", "OAUTHBEARER")]
# A refused kafka-python client retries its bootstrap for 30 s by default: 3 s is enough here.
FAST = {"bootstrap_timeout_ms": 1000}   # a refusal ends in a timeout: make it short
REPO = Path(__file__).resolve().parents[2]


def mode_id(mode) -> str:
    return "/".join(filter(None, mode))


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    require(harness.unavailable(), "Apache Kafka for the security tests")
    log = tmp_path_factory.mktemp("secure-kafka") / "kafka.log"
    with harness.ApacheKafka(log_path=log, secure=True) as broker:
        # The first group lookup creates __consumer_offsets (50 partitions): wait for it once
        # here, not in whichever test looks up a group first.
        with LagProbe(broker.bootstrap, "warm-up") as lag:
            lag.committed(patience=120)
        yield broker


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory) -> Path:
    """A CA of its own: the broker's certificate does not come from it."""
    return make_certificates(tmp_path_factory.mktemp("other-ca")).ca


@pytest.fixture
def topics(kafka, prefix) -> Topics:
    topics = Topics(prefix, 2)
    ensure_topics(kafka.bootstrap, topics)
    return topics


def publish_plain(kafka, topics: Topics, count: int = 1) -> list:
    """Events published through the plaintext listener (set-up, not the client under test)."""
    events = [build(ev.DataArrived(uri=f"file:///data/{i}", rows=10, version=f"v{i}"), MODEL,
                    source="tests/security") for i in range(count)]
    with Publisher(kafka.bootstrap, topics) as publisher:
        for event in events:
            publisher.publish(event)
    return events


# --- the probe ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ALL_MODES, ids=mode_id)
def test_the_probe_gets_in_over_each_listener_and_mechanism(kafka, mode):
    bootstrap, security = kafka.client(*mode)
    assert probe(bootstrap, 5.0, security) is None


@pytest.mark.parametrize("mode", [("SSL", None), ("SASL_SSL", "SCRAM-SHA-512")], ids=mode_id)
def test_the_probe_refuses_a_certificate_from_another_ca(kafka, wrong_ca, mode):
    bootstrap, security = kafka.client(*mode, ca=wrong_ca)
    with pytest.raises(KafkaRefused, match=r"certificate was refused \(.*certificate.*\).*"
                                           r"LOOPLINE_KAFKA_SSL_CA_FILE"):
        probe(bootstrap, 5.0, security)


def test_the_probe_is_refused_by_the_mutual_tls_listener_without_a_client_certificate(kafka):
    bootstrap, security = kafka.client("SSL")
    security = dataclasses.replace(security, cert_file=None, key_file=None)
    with pytest.raises(KafkaRefused, match="TLS handshake failed"):
        probe(bootstrap, 5.0, security)


@pytest.mark.parametrize("mode", [("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
                                  ("SASL_PLAINTEXT", "PLAIN")], ids=mode_id)
def test_the_probe_is_refused_with_a_wrong_password(kafka, mode):
    bootstrap, security = kafka.client(*mode, password="not-the-password")
    with pytest.raises(KafkaRefused, match=r"refused user 'alice': .*(invalid credentials|Invalid username)"):
        probe(bootstrap, 5.0, security)


def test_the_probe_is_refused_a_mechanism_the_listener_does_not_take(kafka):
    _, security = kafka.client("SASL_PLAINTEXT", "PLAIN")
    with pytest.raises(KafkaRefused, match="does not take SASL PLAIN"):
        probe(kafka.bootstrap, 5.0, security)          # the plaintext listener: no SASL at all


# --- each client family connects ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_topic_admin_creates_the_topics(kafka, prefix, mode):
    bootstrap, security = kafka.client(*mode)
    topics = Topics(prefix, 2)
    assert ensure_topics(bootstrap, topics, **security.kafka_python()) == {
        name: 2 for name in topics.all()}


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_publisher_publishes(kafka, topics, mode):
    bootstrap, security = kafka.client(*mode)
    event = build(ev.DataArrived(uri="file:///x", rows=5, version="v1"), MODEL, source="tests/security")
    with Publisher(bootstrap, topics, **security.kafka_python()) as publisher:
        publisher.publish(event)
    assert [s.event.id for s in read_events(kafka.bootstrap, topics, roles=["data"])] == [event.id]


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_snapshot_reader_reads_the_topics(kafka, topics, mode):
    """What `loopline status`, `lineage` and `events` read the bus with."""
    published = publish_plain(kafka, topics, 3)
    bootstrap, security = kafka.client(*mode)
    seen = read_events(bootstrap, topics, roles=["data"], **security.kafka_python())
    assert sorted(s.event.id for s in seen) == sorted(e.id for e in published)


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_lag_probe_measures(kafka, topics, prefix, mode):
    publish_plain(kafka, topics, 3)
    bootstrap, security = kafka.client(*mode)
    with LagProbe(bootstrap, f"{prefix}-group", **security.kafka_python()) as lag:
        assert lag.by_topic([topics.data]) == {topics.data: 3}      # a group that never read


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_confluent_batch_consumer_consumes(kafka, topics, prefix, mode):
    published = publish_plain(kafka, topics, 4)
    bootstrap, security = kafka.client(*mode)

    class Collect:
        def __init__(self):
            self.values, self.done = [], asyncio.Event()

        def revoked(self, partitions):
            pass

        async def process(self, batch, now, caught_up):
            self.values += [r.value for records in batch.values() for r in records]
            if len(self.values) >= len(published):
                self.done.set()
            return {tp: records[-1].offset + 1 for tp, records in batch.items()}

    async def consume() -> list:
        handler = Collect()
        consumer = BatchConsumer(bootstrap=bootstrap, group=f"{prefix}-batch", topics=[topics.data],
                                 handler=handler, config=security.confluent())
        task = asyncio.ensure_future(consumer.run())
        try:
            await asyncio.wait_for(handler.done.wait(), 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return handler.values

    values = asyncio.run(consume())
    assert sorted(json.loads(v)["id"] for v in values) == sorted(e.id for e in published)


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_faust_s_aiokafka_clients_fetch(kafka, topics, mode):
    """The worker's own Kafka clients: aiokafka, with the credentials Faust is given."""
    publish_plain(kafka, topics, 2)                          # one model: one partition
    bootstrap, security = kafka.client(*mode)
    auth = credentials_to_aiokafka_auth(transport.credentials(security))
    listed = {TopicPartition(topics.data, p): 0 for p in range(topics.partitions)}
    ends = asyncio.run(transport.fetched_end_offsets(bootstrap, listed, **auth))
    assert sorted(ends.values()) == [0, 2]                 # a fetch's high watermarks, over TLS/SASL


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_the_serving_prediction_log_publishes(kafka, topics, mode):
    bootstrap, security = kafka.client(*mode)
    plog = PredictionLog(bootstrap, topics, **security.kafka_python())
    ids = plog.log(MODEL, "1", [{"f0": 1.0}, {"f0": 2.0}], [0, 1])
    plog.close()                                             # flushes
    [logged] = read_events(kafka.bootstrap, topics, roles=["predictions"])
    assert logged.data.prediction_ids == ids


# --- each client family is refused ----------------------------------------------------------------
def kafka_python_clients(bootstrap, topics, config):
    """Each loopline wrapper of a kafka-python client, made (and used) with `config`."""
    return {
        "admin": lambda: ensure_topics(bootstrap, topics, timeout=1, **config),
        "publisher": lambda: Publisher(bootstrap, topics, **config).close(),
        "snapshot": lambda: read_events(bootstrap, topics, **config),
        "lag": lambda: LagProbe(bootstrap, "g", **config).close(),
        "predlog": lambda: PredictionLog(bootstrap, topics, **config).close(),
    }


@pytest.mark.parametrize("client", ["admin", "publisher", "snapshot", "lag", "predlog", "aiokafka",
                                    "librdkafka"])
@pytest.mark.parametrize("refusal", ["wrong CA", "wrong password"])
def test_every_client_is_kept_out_by_a_wrong_ca_and_a_wrong_password(kafka, wrong_ca, topics,
                                                                      client, refusal):
    """The certificate is checked and the password matters in every client's mapping (the
    clear words come from the probe, which every process asks first: see below)."""
    bootstrap, security = kafka.client("SASL_SSL", "SCRAM-SHA-512", **(
        {"ca": wrong_ca} if refusal == "wrong CA" else {"password": "not-the-password"}))
    if client == "aiokafka":
        async def connect():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                **credentials_to_aiokafka_auth(transport.credentials(security)))
            await consumer.start()

        with pytest.raises(KafkaConnectionError):
            asyncio.run(connect())
    elif client == "librdkafka":
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                             "log_level": 0, **security.confluent()})
        try:
            with pytest.raises(KafkaException, match="transport failure"):
                consumer.list_topics(timeout=3)
        finally:
            consumer.close()
    else:
        with pytest.raises(KafkaTimeoutError):
            kafka_python_clients(bootstrap, topics, {**security.kafka_python(), **FAST})[client]()


# --- processes: one clear line and exit code 3 -------------------------------------------------------
@pytest.fixture
def cli_env(monkeypatch, tmp_path, prefix):
    """Point `loopline.cli.main` at the secure broker through the environment, as a user does."""
    def use(bootstrap, security) -> None:
        for name in [n for n in os.environ if n.startswith("LOOPLINE_")]:
            monkeypatch.delenv(name)
        env = {"LOOPLINE_BROKER": bootstrap, "LOOPLINE_TOPIC_PREFIX": prefix,
               "LOOPLINE_STATE_DIR": str(tmp_path / "state"), **security.env()}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return use


def test_the_cli_works_over_sasl_ssl_with_the_password_in_a_mounted_file(kafka, cli_env, tmp_path,
                                                                         prefix, capsys):
    bootstrap, security = kafka.client("SASL_SSL", "SCRAM-SHA-512")
    (tmp_path / "password").write_text("alice-secret\n")         # as a Secret's file reads
    cli_env(bootstrap, dataclasses.replace(security, password=None, password_file=tmp_path / "password"))
    assert cli.main(["topics"]) == 0
    assert f"{prefix}.data.arrived\t4" in capsys.readouterr().out
    assert cli.main(["publish", "data", "--model", MODEL, "--uri", "file:///d", "--rows", "3",
                     "--version", "v1"]) == 0
    [seen] = read_events(kafka.bootstrap, Topics(prefix, 4), roles=["data"])
    assert seen.event.subject == MODEL and seen.data.rows == 3


@pytest.mark.parametrize("refusal", ["wrong CA", "wrong password"])
def test_the_cli_says_why_in_one_line_and_exits_3(kafka, wrong_ca, cli_env, capsys, refusal):
    bootstrap, security = kafka.client("SASL_SSL", "SCRAM-SHA-512", **(
        {"ca": wrong_ca} if refusal == "wrong CA" else {"password": "not-the-password"}))
    cli_env(bootstrap, security)
    started = time.monotonic()
    assert cli.main(["topics"]) == 3
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: Kafka at {bootstrap} (SASL_SSL/SCRAM-SHA-512")
    expected = "certificate was refused" if refusal == "wrong CA" else "refused user 'alice'"
    assert expected in err


def process_env(bootstrap: str, security, tmp_path: Path, prefix: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    return {**env, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_TOPIC_PREFIX": prefix,
            "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
            "LOOPLINE_CONFIG": str(write_config(tmp_path / "loopline.yaml")),
            "LOOPLINE_WEB_PORT": str(free_port()), "PYTHONPATH": str(REPO), **security.env()}


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "0"]], ids=lambda c: c[0])
def test_a_process_with_a_wrong_password_exits_3_with_one_clear_line(kafka, tmp_path, prefix, command):
    bootstrap, security = kafka.client("SASL_SSL", "SCRAM-SHA-512", password="not-the-password")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "loopline.cli", *command], capture_output=True,
                          text=True, timeout=60, env=process_env(bootstrap, security, tmp_path, prefix))
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    refused = [line for line in output.splitlines() if "refused user 'alice'" in line]
    assert done.returncode == 3, output
    assert len(refused) == 1 and "invalid credentials" in refused[0], output
    assert "Traceback" not in output
    assert took < 30, f"took {took:.0f}s"            # the interpreter's imports, then one probe


# --- the whole loop, once, over SASL_SSL ----------------------------------------------------------
def test_the_loop_runs_over_sasl_ssl(kafka, tmp_path, prefix):
    """data → trained → evaluated → promoted → deployed → served, every process on SASL_SSL
    with SCRAM-SHA-512, the password from a file."""
    bootstrap, security = kafka.client("SASL_SSL", "SCRAM-SHA-512")
    (tmp_path / "password").write_text("alice-secret")
    security = dataclasses.replace(security, password=None, password_file=tmp_path / "password")
    config = write_config(tmp_path / "loopline.yaml")
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    serving=True, security=security) as stack:
        arrived = data_event(0, tmp_path / "data")
        with Publisher(bootstrap, stack.settings.topics, **security.kafka_python()) as publisher:
            publisher.publish(arrived)
        request = stack.observer.wait_for(lambda o: o.of_type(ev.TrainingRequested.TYPE), 60,
                                          "a training request")[0]
        done = stack.observer.wait_for(lambda o: outcome_of(o, request.event.id), 180,
                                       "the training's outcome")
        assert done.event.type == ev.DeploymentDone.TYPE, done.data
        assert done.event.correlationid == arrived.id

        def served_version():
            stack.serving.check()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{stack.serve_port}/models",
                                            timeout=2) as response:
                    return json.load(response).get(MODEL, {}).get("version")
            except OSError:
                return None

        assert wait_until(served_version, 60, "the serving process to load the champion") == done.data.version
