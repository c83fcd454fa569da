"""Connection settings from the environment, all under one prefix: `LOOPLINE_`.

What a deployment changes (broker, MLflow, state dir, topic prefix, group timeouts) lives here;
what a model team changes (pipelines, policies, gates) lives in `loopline.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    broker: str = "127.0.0.1:9092"              # Kafka bootstrap servers
    mlflow_uri: str = ""                        # empty: sqlite store under state_dir
    state_dir: Path = Path(".loopline")
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
    job_image: str = ""                         # for models without pipeline.kubernetes.image
    broker_wait_seconds: float = Field(60.0, gt=0)   # at start-up: give up (exit 3) after this
    broker_lost_seconds: float = Field(120.0, gt=0)  # running: exit 3 when Kafka is gone this long
    web_bind: str = "127.0.0.1"                 # 0.0.0.0 in a pod: the kubelet probes /livez, /readyz

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.partitions)

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_uri:
            return self.mlflow_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return (self.state_dir / "mlartifacts").resolve().as_uri()
