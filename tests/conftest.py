"""Shared fixtures: the location of the offline test data."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder: ``$NUDGE_RAG_DATA``, else ``<repo>/../shared/data``."""
    folder = Path(os.environ.get("NUDGE_RAG_DATA", _DEFAULT_DATA))
    if not folder.is_dir():
        if os.environ.get("CI"):  # CI has ../shared: a missing folder is a broken checkout
            pytest.fail(f"test data folder {folder} not found in CI")
        pytest.skip(f"test data folder {folder} not found (set NUDGE_RAG_DATA)")
    return folder


@pytest.fixture(scope="session")
def nfcorpus_dir(data_dir: Path) -> Path:
    """The nfcorpus folder (``nudge_split/``, ``beir_split/``); skips when absent."""
    folder = data_dir / "nfcorpus"
    if not (folder / "nudge_split" / "emb").is_dir():
        pytest.skip(f"nfcorpus data not found at {folder} (set NUDGE_RAG_DATA)")
    return folder


class ChromaServer:
    """A Chroma HTTP server (``chroma run``) on a free localhost port, for tests.

    ``stop()`` kills it and ``start()`` brings it back on the same port and data folder, so a
    test can take the server away in the middle of a write-back.
    """

    def __init__(self, exe: str, path: Path):
        self.exe, self.path, self.host = exe, path, "127.0.0.1"
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120, attempts: int = 3) -> None:
        """Start it and wait for its heartbeat; a process that dies is started again.

        All attempts share ``timeout`` seconds (a busy machine can be slow to start one).
        """
        deadline = time.monotonic() + timeout
        for attempt in range(1, attempts + 1):
            if self._start_once(deadline):
                return
            if attempt == attempts or time.monotonic() > deadline:
                break
            time.sleep(1.0 * attempt)
        tail = (self.path / "server.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"chroma server did not start in {attempts} attempts: {tail}")

    def _start_once(self, deadline: float) -> bool:
        import chromadb

        log = open(self.path / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.exe,
                "run",
                "--path",
                str(self.path / "db"),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        pause = 0.2
        while True:
            try:
                chromadb.HttpClient(host=self.host, port=self.port).heartbeat()
                return True
            except Exception:
                if self.proc.poll() is not None:
                    self.proc = None
                    return False
                if time.monotonic() > deadline:
                    self.stop(kill=True)
                    return False
                time.sleep(pause)
                pause = min(pause * 1.5, 2.0)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self):
        import chromadb

        return chromadb.HttpClient(host=self.host, port=self.port)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A running :class:`ChromaServer`, stopped at the end of the session."""
    pytest.importorskip("chromadb", reason="pip install 'nudge-rag[chroma]'")
    exe = Path(sys.executable).with_name("chroma")
    exe = str(exe) if exe.exists() else shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    server = ChromaServer(exe, tmp_path_factory.mktemp("chroma_server"))
    server.start()
    yield server
    server.stop()


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):  # CI installs the test extra: a server that cannot start is a bug
        pytest.fail(reason)
    pytest.skip(reason)


class PgServer:
    """PostgreSQL 16 + pgvector from the ``pgserver`` wheel, on a unix socket in ``folder``.

    ``kill()`` crashes it (``pg_ctl stop -m immediate``: every backend ends at once, no
    checkpoint) and ``restart()`` brings it back on the same socket and data (crash
    recovery), so a test can take the database away in the middle of a write-back.
    """

    def __init__(self, folder: Path):
        self.folder, self.server, self.url = folder, None, ""

    def start(self, timeout: float = 120.0, attempts: int = 3) -> None:
        """Start it and wait until it takes connections (retried within ``timeout`` s).

        A busy machine can make ``pg_ctl start`` or the first connection slow: each attempt
        waits for a connection with a growing pause, and a failed attempt starts again, all
        within ``timeout`` seconds; the last error is raised.
        """
        import warnings

        import psycopg

        deadline = time.monotonic() + timeout
        for attempt in range(1, attempts + 1):
            try:
                with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR is not set
                    warnings.simplefilter("ignore")
                    import pgserver

                    if self.server is None:
                        self.server = pgserver.get_server(
                            self.folder / "data", cleanup_mode="delete"
                        )
                self.url = self.server.get_uri()
                self.wait(deadline)
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return
            except Exception:
                if attempt == attempts or time.monotonic() > deadline:
                    raise
                time.sleep(min(2.0 * attempt, max(0.0, deadline - time.monotonic())))
                if self.server is not None:
                    with contextlib.suppress(Exception):  # the next attempt reports the error
                        self.restart()

    def wait(self, deadline: float) -> None:
        """Wait until the server takes connections, or raise the last error at ``deadline``."""
        import psycopg

        pause = 0.1
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def kill(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )

    def restart(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()
        self.wait(time.monotonic() + 60)

    def ensure_running(self, timeout: float = 90.0) -> None:
        """Bring the server back if it stopped (killed by a test, or by the system under
        memory pressure); waits for it within ``timeout`` seconds, restarting as needed."""
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as err:
            warnings.warn(
                f"the test PostgreSQL server was down ({err}); restarting it", stacklevel=2
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.restart()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A running :class:`PgServer`, started once per test session and always stopped.

    Skips (with the reason) when ``pgserver`` / ``psycopg`` are missing or the server cannot
    start, except in CI (``$CI`` set), where that fails. Never kill or restart it: a test
    that takes its server away uses :func:`own_pg_server` (other tests share this one).
    """
    yield from _pg_server()


@pytest.fixture(scope="module")
def own_pg_server():
    """A :class:`PgServer` of this test module alone, for tests that kill or restart it.

    A module overrides ``pg_server`` (and ``pg_url``) with it, so that killing it never takes
    the session's server away from the other test files.
    """
    yield from _pg_server()


def _pg_server():
    import warnings

    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR is not set
            warnings.simplefilter("ignore")
            import pgserver  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as err:
        _skip_or_fail(f"PostgreSQL tests need pgserver and psycopg (nudge-rag[test]): {err}")
    # Not under pytest's basetemp: every new pytest session of this user (a quick loop in
    # another terminal) makes /tmp/pytest-of-<user> mode 0700 again, and a server that runs as
    # pgserver's own system user (when the tests run as root) then cannot reach its data
    # folder: its next checkpoint PANICs and the server is gone. A folder of its own keeps the
    # traverse permissions pgserver gives it.
    server = PgServer(Path(tempfile.mkdtemp(prefix="nudge-rag-pg-")))
    try:
        server.start()
    except Exception as err:  # noqa: BLE001 - any failure to start is reported the same way
        server.stop()
        _skip_or_fail(f"pgserver could not start PostgreSQL: {type(err).__name__}: {err}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _pg_server_up(request):
    """Before each test that uses PostgreSQL, make sure its server takes connections.

    A server that stopped (a test killed it, or the system did, e.g. under memory pressure)
    is restarted on the same data, within a bound, instead of failing every later test.
    """
    if "pg_server" in request.fixturenames or "pg_url" in request.fixturenames:
        request.getfixturevalue("pg_server").ensure_running()


@pytest.fixture(scope="module")
def pg_url(pg_server) -> str:
    """Connection URL of the PostgreSQL 16 + pgvector server (``vector`` created).

    A libpq URL on a unix socket (``postgresql://postgres:@/postgres?host=<dir>``) for
    psycopg; SQLAlchemy takes it as ``postgresql+psycopg://...``. One server serves every
    test: give each test its own tables / collections (unique names), or its own database.
    Module-scoped, so that a module that overrides ``pg_server`` with :func:`own_pg_server`
    gets its own server's URL here too.
    """
    return pg_server.url
