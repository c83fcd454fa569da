"""Connection settings from the environment, all under one prefix: `LOOPLINE_`.

What a deployment changes (broker, MLflow, state dir, topic prefix, group timeouts) lives here;
what a model team changes (pipelines, policies, gates) lives in `loopline.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.security import KafkaSecurity
from streams.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    broker: str = "127.0.0.1:9092"              # Kafka bootstrap servers
    # Kafka security, for every client (streams.security checks it and maps it into each
    # client's names). Secrets come from files, mounted Secrets that each new client re-reads;
    # the inline username and password are for development.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = ""              # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER
    kafka_sasl_username: str = ""
    kafka_sasl_username_file: str = ""
    kafka_sasl_password: str = ""
    kafka_sasl_password_file: str = ""
    kafka_sasl_oauth_token_file: str = ""       # OAUTHBEARER: a token file, re-read as it expires
    kafka_sasl_oauth_token_callback: str = ""   # or MODULE:FUNCTION returning a token
    kafka_ssl_ca_file: str = ""                 # empty: the system's trusted CAs
    kafka_ssl_cert_file: str = ""               # a client certificate and key: mutual TLS
    kafka_ssl_key_file: str = ""
    kafka_ssl_check_hostname: bool = True
    mlflow_uri: str = ""                        # empty: sqlite store under state_dir
    state_dir: Path = Path(".loopline")
    # Where the worker keeps its Faust tables (the trigger's model states, the operator gate's seen
    # commands, the trainer's launches): `memory` rebuilds them from their changelogs at every
    # start; `rocksdb` keeps them on disk under <state_dir>/faust, so a restart reads them back and
    # replays only the changelog records written since (README, "State and compaction").
    table_store: Literal["memory", "rocksdb"] = "memory"
    config: Path = Path("loopline.yaml")
    topic_prefix: str = "loopline"
    partitions: int = Field(4, ge=1)
    group: str = "loopline-worker"              # consumer group / Faust app id
    source: str = "loopline/worker"             # CloudEvents `source` of the worker's events
    web_port: int = 6066
    # Tansu holds a JoinGroup for the whole rebalance timeout: short values make starts fast.
    rebalance_timeout: float = 4.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    fetch_max_wait_ms: int = 10                 # Faust hard-codes 1500 ms; see agents/transport.py
    tick_interval: float = 1.0                  # clock ticks for cooldown expiry and staleness
    poll_interval: float = 0.1                  # how often the launcher watcher looks at runs
    max_event_bytes: int = 1_000_000
    # Where a dead-lettered value too large to travel in its dead letter is kept (fsspec URL:
    # file://, s3://, a shared volume); empty: <state_dir>/deadletter.
    deadletter_spill_uri: str = ""
    drift_workers: int = Field(1, ge=1)          # processes running drift checks (Evidently)
    # Operator commands: keys file of key id -> {operator, secret} (a mounted Secret works).
    # The worker verifies with every key in it; the CLI signs with `operator_key_id`'s.
    operator_keys: Path | None = None
    operator_key_id: str = ""                   # the CLI's key (else the file's only key)
    operator_ttl_seconds: float = Field(600.0, gt=0, le=86_400)   # a signed command's lifetime
    lag_interval: float = Field(5.0, gt=0)      # how often the worker measures consumer lag
    # Kubernetes / Argo launchers (loopline/launchers.py): how the worker reaches the API server.
    kube_in_cluster: bool | None = None         # None: in-cluster iff KUBERNETES_SERVICE_HOST is set
    kubeconfig: str | None = None               # else $KUBECONFIG, else ~/.kube/config
    kube_context: str | None = None
    kube_namespace: str = "default"             # for models without pipeline.kubernetes.namespace
    # The run watcher's Lease (in kube_namespace): how long runs wait for a new leader if one dies.
    kube_lease_seconds: int = Field(15, ge=3, le=3600)
    job_image: str = ""                         # for models without pipeline.kubernetes.image
    broker_wait_seconds: float = Field(60.0, gt=0)   # at start-up: give up (exit 3) after this
    broker_lost_seconds: float = Field(120.0, gt=0)  # running: exit 3 when Kafka is gone this long
    web_bind: str = "127.0.0.1"                 # 0.0.0.0 in a pod: the kubelet probes /livez, /readyz
    # Serving (`loopline serve`): the prediction-id signing key, shared by every replica (a mounted
    # Secret); unset: <state_dir>/serving.key, created once (0600), so local replicas share it.
    serving_key_file: Path | None = None
    # Micro-batching per model version: a batch closes at this many rows or this long after its
    # first request; 0 for either turns batching off (each request predicted alone).
    serving_max_batch_rows: int = Field(64, ge=0)
    serving_max_batch_wait_ms: float = Field(2.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _kafka_security_works(self) -> "Settings":
        self.kafka_security            # raises, naming the setting, if the combination cannot work
        return self

    @property
    def kafka_security(self) -> KafkaSecurity:
        def path(value: str) -> Path | None:
            return Path(value) if value else None

        return KafkaSecurity(
            protocol=self.kafka_security_protocol.upper(),
            sasl_mechanism=self.kafka_sasl_mechanism.upper() or None,
            username=self.kafka_sasl_username or None,
            username_file=path(self.kafka_sasl_username_file),
            password=self.kafka_sasl_password or None,
            password_file=path(self.kafka_sasl_password_file),
            oauth_token_file=path(self.kafka_sasl_oauth_token_file),
            oauth_token_callback=self.kafka_sasl_oauth_token_callback or None,
            ca_file=path(self.kafka_ssl_ca_file), cert_file=path(self.kafka_ssl_cert_file),
            key_file=path(self.kafka_ssl_key_file), check_hostname=self.kafka_ssl_check_hostname)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.partitions)

    @property
    def table_dir(self) -> Path:
        """Faust's data dir (its tables, RocksDB files with `table_store=rocksdb`): in the state dir."""
        return self.state_dir.resolve() / "faust"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_uri:
            return self.mlflow_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return (self.state_dir / "mlartifacts").resolve().as_uri()
