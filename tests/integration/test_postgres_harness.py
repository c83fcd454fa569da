"""devstack.postgres: a server of our own that accepts connections, then leaves nothing behind."""

from __future__ import annotations

import psycopg2
import pytest

from devstack import postgres as pg


def test_the_session_server_accepts_connections_on_its_port(postgres):
    conn = psycopg2.connect(f"{postgres.dsn}/postgres")
    with conn.cursor() as cur:
        cur.execute("SHOW port")
        assert cur.fetchone()[0] == str(postgres.port)
    conn.close()


def test_after_the_block_the_server_and_its_directory_are_gone(postgres):
    with pg.Postgres() as server:
        root = server.root
        assert (root / "data" / "postmaster.pid").exists()
    assert not root.exists()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"{server.dsn}/postgres", connect_timeout=5)


def test_missing_binaries_are_named(monkeypatch):
    monkeypatch.setattr(pg, "bin_dir", lambda: None)
    assert "initdb is not installed" in pg.unavailable_reason()
    with pytest.raises(pg.PostgresUnavailable, match="initdb is not installed"):
        pg.Postgres().__enter__()
