"""The PostgreSQL test server comes back when it stops: a test that killed it (or the system
killing it under memory pressure) does not fail the tests after it; and nothing outside the
test session (another pytest session) takes it away."""

from __future__ import annotations

import subprocess
import sys

import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")


@pytest.fixture(scope="module")
def pg_server(own_pg_server):
    """This module kills its server: its own, never the session's."""
    return own_pg_server


def test_kill_the_server(pg_server):
    pg_server.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.url, connect_timeout=5).close()


def test_the_next_test_finds_it_running(pg_url):
    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_second_pytest_session_does_not_take_the_server_away(own_pg_server, tmp_path):
    """Another pytest session of this user (a quick loop in a second terminal) resets
    ``/tmp/pytest-of-<user>`` to mode 0700. A server under it that runs as pgserver's own
    system user (tests run as root) could then not reach its data folder: its next
    checkpoint PANICked and the server was gone ("connection refused" in later tests)."""
    test = "def test_nothing(tmp_path):\n    assert tmp_path.is_dir()\n"  # makes its basetemp
    (tmp_path / "test_nothing.py").write_text(test, encoding="utf-8")
    other = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert other.returncode == 0, other.stdout + other.stderr
    with psycopg.connect(own_pg_server.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("CHECKPOINT")  # reads global/pg_control by its full path
    with psycopg.connect(own_pg_server.url, autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
