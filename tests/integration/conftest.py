"""Services the integration tests start themselves, once per session."""

from __future__ import annotations

import pytest

from devstack.postgres import Postgres, unavailable_reason
from tests.conftest import require


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own. Missing binaries fail in CI (`make test` installs them)
    and skip, with the reason, elsewhere."""
    require(unavailable_reason(), "PostgreSQL for the MLflow-server tests")
    with Postgres() as server:
        yield server
