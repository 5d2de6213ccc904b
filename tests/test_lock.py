"""The writer lock and the write-back state are one interface each.

One :class:`~nudge_rag._lock.WriterLock` with two outside halves (a lock file, a PostgreSQL
advisory lock): a state folder, pgvector's state and the feedback log's re-tunes all use
them, so each gets the same waiting, naming of the holder and link safety. A store's own
write-back state must be a :class:`~nudge_rag.backends.WriteBackState`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from nudge_rag import ArrayStore, FeedbackLog, WriteBack
from nudge_rag._errors import LockBusy, TuneInProgressError
from nudge_rag._lock import AdvisoryLock, FileLock, WriterLock
from nudge_rag._state import FolderState
from nudge_rag.backends import WriteBackState

HOLD_FILE_LOCK = """
import sys, time
from pathlib import Path
from nudge_rag._lock import FileLock
with FileLock(Path(sys.argv[1]), "the test lock").hold("holding"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_waiting_for_a_lock_leaves_the_holders_record_alone(tmp_path):
    """A writer that gives up waiting must not erase the record the next message needs."""
    path = tmp_path / "x.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE_LOCK, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        lock = FileLock(path, "the test lock")
        for timeout in (0.0, 0.2):
            with pytest.raises(LockBusy, match=rf"locked by pid {proc.pid} ") as err:
                lock.acquire("second", timeout)
            assert err.value.holder["what"] == "holding"
            assert lock.holder_now()["pid"] == proc.pid  # still recorded
        assert lock.depth == 0
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    with lock.hold("after"):  # the holder died: the lock is free at once
        assert lock.holder_now()["what"] == "after"
    assert lock.holder_now() is None


def test_in_process_lock_is_reentrant_and_excludes_other_threads():
    lock = WriterLock("the test state")
    got: list[str] = []
    with lock.hold("outer"), lock.hold("inner"):
        assert lock.depth == 2

        def other() -> None:
            try:
                lock.acquire("other", 0.05)
            except LockBusy as err:
                got.append(str(err))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert got and "the test state is locked by" in got[0] and "outer" in got[0]
    assert lock.depth == 0 and lock.holder_now() is None


def test_feedback_retune_lock_is_a_file_lock_that_names_its_holder(tmp_path):
    log, other = FeedbackLog(tmp_path / "f.db"), FeedbackLog(tmp_path / "f.db")

    def recorded(key: str) -> dict | None:  # what another process reads in the lock file
        return other._db._tune_lock(key).holder_now()

    try:
        with log._db.tune_lock("s"):
            assert recorded("s")["what"] == "re-tune"
            with pytest.raises(TuneInProgressError, match=rf"pid {os.getpid()} .*re-tune"):
                other._db.tune_lock("s").__enter__()
            with other._db.tune_lock("t"):  # another store's re-tune is not in the way
                assert recorded("t")["pid"] == os.getpid()
        assert recorded("s") is None and recorded("t") is None  # released, records cleared
        with other._db.tune_lock("s"):  # free again: the other log takes it
            assert recorded("s")["pid"] == os.getpid()
    finally:
        log.close()
        other.close()


def test_feedback_retune_lock_file_is_never_written_through_a_link(tmp_path, caplog):
    log = FeedbackLog(tmp_path / "f.db")
    lock = log._db._tune_lock("s")
    assert isinstance(lock, FileLock)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    lock.path.symlink_to(victim)
    try:
        with caplog.at_level("WARNING"), log._db.tune_lock("s"):
            assert lock.path.is_file() and not lock.path.is_symlink()
            assert lock.holder_now()["what"] == "re-tune"  # the record is in the new file
    finally:
        log.close()
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert not lock.path.is_symlink()
    assert "replaced it with a regular lock file" in caplog.text


def test_pgvector_state_and_lock_implement_the_interfaces(pg_url):
    pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
    import psycopg

    from nudge_rag.backends import PgVectorBackend
    from nudge_rag.backends.pgvector import PgVectorLock

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("DROP TABLE IF EXISTS lock_iface")
        conn.execute("CREATE TABLE lock_iface (id text PRIMARY KEY, embedding vector(4))")
        conn.execute("INSERT INTO lock_iface VALUES ('a', '[1,0,0,0]'), ('b', '[0,1,0,0]')")
    backend = PgVectorBackend(pg_url, table="lock_iface", distance="cosine")
    state = backend.writeback_state()
    assert isinstance(state, WriteBackState) and isinstance(state.lock, AdvisoryLock)
    assert isinstance(state.lock, PgVectorLock)
    wb = WriteBack(backend)
    with wb.locked("fit"):
        # another process's view (a new lock object on its own session) sees this holder
        fresh = PgVectorLock(PgVectorBackend(pg_url, table="lock_iface", distance="cosine"))
        with pytest.raises(LockBusy, match=rf"locked by pid {os.getpid()} "):
            fresh.acquire("second", 0.1)
        assert fresh.holder_now()["what"] == "fit"  # its wait did not erase the record
    assert fresh.holder_now() is None


class _NotAState:
    lock = WriterLock("x")


class _StoreWithAWrongState(ArrayStore):
    def writeback_state(self):
        return _NotAState()


def test_a_store_state_must_be_a_writeback_state():
    store = _StoreWithAWrongState(["a"], np.eye(1, 4, dtype=np.float32))
    with pytest.raises(TypeError, match=r"writeback_state\(\) must return a .*WriteBackState"):
        WriteBack(store)


def test_the_folder_state_is_the_file_implementation(tmp_path):
    state = FolderState(tmp_path / "s", owner=object())
    assert isinstance(state, WriteBackState) and isinstance(state.lock, FileLock)
    assert state.lock.path == tmp_path / "s" / "writer.lock"
    memory = FolderState(None, owner=object())
    assert type(memory.lock) is WriterLock  # state in memory: the in-process lock only
