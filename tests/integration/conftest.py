"""Services the integration tests start themselves, once per session."""

from __future__ import annotations

import os

import pytest

from devstack.postgres import Postgres, unavailable_reason


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own. Missing binaries fail in CI (`make test` installs them)
    and skip, with the reason, elsewhere."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI needs PostgreSQL for the MLflow-server tests: {reason}", pytrace=False)
        pytest.skip(reason)
    with Postgres() as server:
        yield server
