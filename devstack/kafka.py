"""Apache Kafka itself, on this machine's Java, for the tests and the benches: no Docker needed.

Tansu (the embedded default) is a Kafka-protocol broker, not Kafka: production runs Apache Kafka,
so everything that talks to the bus is also tested on it. The broker's jars come from Maven
Central through `mvn` (cached under the project's state dir, `.loopline/kafka/`, never
committed); a single-node KRaft broker (one process, broker and controller) gets its storage
formatted in a temporary folder and listens on free ports. Where Java or Maven is missing (a
laptop), `unavailable()` says so and the Kafka runs skip with that reason; CI has both.

    with ApacheKafka(log_path=...) as kafka:
        kafka.bootstrap        # "127.0.0.1:PORT"

`secure=True` adds the listeners a production cluster has, beside the plaintext one every other
test uses: SSL (mutual TLS: the client shows a certificate too), SASL_SSL and SASL_PLAINTEXT,
each SASL listener taking PLAIN, SCRAM-SHA-256/512 (users created at format time, as Kafka's own
tools do) and OAUTHBEARER with Kafka's unsecured test tokens. The certificates come from a test
CA made here (`devstack.tls`). `kafka.client("SASL_SSL", "SCRAM-SHA-512")` gives a client's
bootstrap address and its `KafkaSecurity`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from devstack.tls import Certificates, make_certificates
from streams.broker import BrokerError, free_port
from streams.probe import probe
from streams.security import KafkaSecurity

VERSION = os.environ.get("LOOPLINE_KAFKA_VERSION", "4.4.0")
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LOOPLINE_KAFKA_CACHE", REPO / ".loopline" / "kafka"))

# The one artifact whose runtime closure is the broker (kafka.Kafka, kafka.tools.StorageTool).
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.loopline</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# Broker settings a single node needs (replication 1) and a test wants (no join delay).
SINGLE_NODE = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",       # loopline creates every topic itself
}

SECURE_PROTOCOLS = ("SSL", "SASL_SSL", "SASL_PLAINTEXT")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
USERS = {"alice": "alice-secret"}            # every SASL mechanism knows them
JAAS = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    # With no validator configured, Kafka checks OAUTHBEARER tokens with its unsecured test
    # validator: an unsigned JWT (alg "none") whose `sub` names the user.
    "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                   'unsecuredLoginStringClaim_sub="admin";',
}


def unavailable() -> str | None:
    """Why Apache Kafka cannot run here, or None."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return f"Apache Kafka needs Java 17+ and Maven on PATH; missing: {', '.join(missing)}"
    return None


def jars(version: str = VERSION, cache: Path = CACHE) -> Path:
    """The folder of the broker's jars, fetched once with Maven (a marker file says complete)."""
    libs = cache / version / "libs"
    if (libs / ".complete").exists():
        return libs
    reason = unavailable()
    if reason:
        raise BrokerError(reason)
    work = cache / version
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as lock:         # two pytest workers: one fetches, one waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (libs / ".complete").exists():
            _fetch(version, cache, work, libs)
    return libs


def _fetch(version: str, cache: Path, work: Path, libs: Path) -> None:
    (work / "pom.xml").write_text(POM.format(version=version))
    fetch = subprocess.run(
        ["mvn", "-q", "-B", f"-Dmaven.repo.local={cache / 'm2'}", "-f", str(work / "pom.xml"),
         "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True)
    if fetch.returncode != 0:
        raise BrokerError(f"mvn could not fetch org.apache.kafka:kafka_2.13:{version}: "
                          f"{(fetch.stdout + fetch.stderr).strip()[-800:]}")
    (libs / ".complete").touch()


def unsecured_token(subject: str, lifetime: float = 3600.0) -> str:
    """An unsigned JWT (alg "none") for Kafka's unsecured OAUTHBEARER validator: test use only."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = time.time()
    return f'{part({"alg": "none"})}.{part({"sub": subject, "iat": now, "exp": now + lifetime})}.'


def cluster_id(draw=uuid.uuid4) -> str:
    """A KRaft cluster id: a UUID as 22 URL-safe base64 characters (what `random-uuid` prints).

    Like Kafka's own `Uuid.randomUuid`, an id starting with '-' is drawn again: one in 64 would
    otherwise be read by kafka-storage's argument parser as an option, failing the format."""
    while (text := base64.urlsafe_b64encode(draw().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return text


class ApacheKafka:
    """A single-node KRaft broker in a temporary folder; the same interface as EmbeddedBroker."""

    def __init__(self, log_path: str | Path | None = None, *, version: str = VERSION,
                 settings: dict[str, str] | None = None, heap: str = "512m", secure: bool = False):
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.ports = {protocol: free_port() for protocol in (SECURE_PROTOCOLS if secure else ())}
        self.certificates: Certificates | None = None     # made at start, when secure
        self.log_path = Path(log_path) if log_path else None
        self.version, self.heap = version, heap
        self.settings = dict(settings or {})
        self.process: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def properties(self, data_dir: Path) -> dict[str, str]:
        advertised = ",".join(f"{name}://{self.address(name)}" for name in ("PLAINTEXT", *self.ports))
        return {
            **SINGLE_NODE,
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": ",".join(
                ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT", *(f"{p}:{p}" for p in self.ports)]),
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(data_dir),
            **self._security_properties(),
            **self.settings,
        }

    def _security_properties(self) -> dict[str, str]:
        if not self.ports:
            return {}
        certs = self.certificates
        out = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs.server_keystore),
               "ssl.truststore.type": "PEM", "ssl.truststore.location": str(certs.ca),
               "listener.name.ssl.ssl.client.auth": "required"}      # the SSL listener: mutual TLS
        users = " ".join(f'user_{name}="{password}"' for name, password in USERS.items())
        for listener in ("sasl_ssl", "sasl_plaintext"):
            out[f"listener.name.{listener}.sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            for mechanism, jaas in JAAS.items():
                out[f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"] = \
                    jaas.format(users=users)
        return out

    def address(self, protocol: str = "PLAINTEXT") -> str:
        """The bootstrap address of one listener."""
        return self.bootstrap if protocol == "PLAINTEXT" else f"127.0.0.1:{self.ports[protocol]}"

    def client(self, protocol: str, mechanism: str | None = None, *, user: str = "alice",
               password: str | None = None, ca: Path | None = None) -> tuple[str, KafkaSecurity]:
        """A client's bootstrap address and security for one listener: the harness's CA, the
        client certificate on the SSL listener, the user's password (or token) on SASL ones.
        `password` and `ca` override them, to see a wrong one refused."""
        certs, tls = self.certificates, protocol in ("SSL", "SASL_SSL")
        secret = mechanism not in (None, "OAUTHBEARER")        # PLAIN and SCRAM: a password
        security = KafkaSecurity(
            protocol=protocol, sasl_mechanism=mechanism, username=user if secret else None,
            password=(USERS[user] if password is None else password) if secret else None,
            oauth_token_file=self._token_file(user) if mechanism == "OAUTHBEARER" else None,
            ca_file=(ca or certs.ca) if tls else None,
            cert_file=certs.client_cert if protocol == "SSL" else None,
            key_file=certs.client_key if protocol == "SSL" else None)
        return self.address(protocol), security

    def _token_file(self, user: str) -> Path:
        path = Path(self._dir.name) / f"{user}.token"
        path.write_text(unsecured_token(user))
        return path

    def start(self, timeout: float = 60.0) -> "ApacheKafka":
        classpath = f"{jars(self.version)}/*"
        self._dir = tempfile.TemporaryDirectory(prefix="kafka-")
        home = Path(self._dir.name)
        config = home / "server.properties"
        if self.ports:
            self.certificates = make_certificates(home / "tls")
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties(home / "data").items()))
        java = ["java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-cp", classpath]
        scram = [arg for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512") if self.ports
                 for name, password in USERS.items()
                 for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]
        fmt = subprocess.run([*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id()}",
                              "-c", str(config), *scram], capture_output=True, text=True)
        if fmt.returncode != 0:
            raise BrokerError(f"kafka-storage format failed: {(fmt.stdout + fmt.stderr).strip()[-800:]}")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        why = "not started"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise BrokerError(f"Apache Kafka exited with code {code} at start-up (log: {self.log_path})")
            why = probe(self.bootstrap, timeout=1.0)
            if why is None:
                return
            time.sleep(0.1)         # a JVM start takes seconds; the probe itself answers at once
        self.stop()
        raise BrokerError(f"Apache Kafka on {self.bootstrap} did not answer within {timeout:.0f}s: {why}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()                                   # a frozen JVM cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)        # a clean shutdown takes a few seconds
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): a network partition as seen by clients."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> "ApacheKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
