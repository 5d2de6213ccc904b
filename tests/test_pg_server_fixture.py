"""The PostgreSQL test server comes back when it stops: a test that killed it (or the system
killing it under memory pressure) does not fail the tests after it."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")


@pytest.fixture(scope="module")
def pg_server(own_pg_server):
    """This module kills its server: its own, never the session's."""
    return own_pg_server


@pytest.fixture(scope="module")
def pg_url(pg_server) -> str:
    """The URL of this module's own server."""
    return pg_server.url


def test_kill_the_server(pg_server):
    pg_server.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.url, connect_timeout=5).close()


def test_the_next_test_finds_it_running(pg_url):
    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
