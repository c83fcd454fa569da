"""The same loop against an MLflow tracking server on PostgreSQL, as production runs it.

The PostgreSQL server is the session's own (the `postgres` fixture, devstack.postgres)."""

from __future__ import annotations

import mlflow
import pytest

from devstack.stack import LocalStack
from devstack.tracking_server import TrackingServer, create_database, drop_database
from streams import events as ev
from streams.publisher import Publisher
from tests.integration.loop_harness import MODEL, data_event, outcome_of, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_server(tmp_path, postgres):
    backend = create_database(postgres.dsn)
    try:
        with TrackingServer(backend, tmp_path / "artifacts", tmp_path / "mlflow-server.log") as server:
            yield server
    finally:
        drop_database(backend)


def test_loop_on_a_postgres_backed_tracking_server(tmp_path, bootstrap, prefix, tracking_server):
    config = write_config(tmp_path / "loopline.yaml")
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    mlflow_uri=tracking_server.uri) as stack:
        arrived = data_event(0, tmp_path / "data")
        with Publisher(stack.bootstrap, stack.settings.topics) as publisher:
            publisher.publish(arrived)
        request = stack.observer.wait_for(lambda o: o.of_type(ev.TrainingRequested.TYPE), 30,
                                          "a training request")[0]
        done = stack.observer.wait_for(lambda o: outcome_of(o, request.event.id), 150,
                                       "the deployment")

    assert done.event.type == ev.DeploymentDone.TYPE, done.data
    client = mlflow.MlflowClient(tracking_uri=tracking_server.uri, registry_uri=tracking_server.uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == done.data.version
    assert champion.tags["loopline.idempotency_key"] == request.data.idempotency_key
    # the model's artifacts went through the server to its artifact store, not a local path
    assert any((tmp_path / "artifacts").rglob("MLmodel"))
    assert not (tmp_path / "state" / "mlartifacts").exists()
