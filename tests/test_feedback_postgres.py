"""FeedbackLog on PostgreSQL (the session's pgserver): the same log as on SQLite, four
processes writing at once, purge, export/import, no text when opted out, the tune lock."""

from __future__ import annotations

import multiprocessing
import uuid

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nudge_rag import (
    ArrayStore,
    FeedbackLog,
    StoreTuner,
    TuneInProgressError,
    UnknownIdError,
    tune_from_feedback,
)

DIM = 8
N_PROCS, N_QUERIES = 4, 500


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def log(pg_url, prefix):
    with FeedbackLog(pg_url, table_prefix=prefix) as opened:
        yield opened


def test_round_trip_checks_and_pairs(log):
    assert log.kind == "postgresql"
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3, DIM)).astype(np.float32)
    q0 = log.log_query(vecs[0], ["a", "b"], text="q0", store="s", at=10.0)
    q1 = log.log_query(vecs[1], ["b", "c"], text="q1", store="s", at=20.0)
    again = log.log_query(vecs[0] * 2, ["a", "b"], text="q0 again", store="s", at=30.0)
    got = log.get_query(q0)
    assert (got.time, got.store, got.text, got.shown_ids) == (10.0, "s", "q0", ["a", "b"])
    assert_array_equal(got.vector, vecs[0])
    with pytest.raises(UnknownIdError, match="was not shown"):
        log.feedback(q0, "c")
    with pytest.raises(UnknownIdError, match="not in the feedback log"):
        log.feedback("nope", "a")
    log.feedback(q0, "a")
    log.feedback(again, "a", relevant=False)  # the same question: cancels
    log.feedback(again, "b")
    log.feedback(q1, "c", weight=2.0)
    pairs = log.pairs(store="s")
    assert pairs.answer_ids == [["b"], ["c"]]
    assert pairs.query_ids == [[q0, again], [q1]]
    assert log.counts() == (3, 4)
    assert "***" in repr(log) or "@" not in repr(log)


def _writer(log: FeedbackLog, worker: int) -> None:
    rng = np.random.default_rng(worker)
    vecs = rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)
    for i in range(N_QUERIES):
        qid = log.log_query(vecs[i], [f"d{i}", f"d{i + 1}"], query_id=f"w{worker}-{i}")
        log.feedback(qid, f"d{i + 1}", relevant=bool(i % 2))
    log.close()


@pytest.mark.slow  # four writer processes on PostgreSQL: about 7 s
def test_four_processes_lose_nothing(log):
    """4 processes x 500 queries with feedback at once, one database: every row is there."""
    log.counts()  # the parent holds a connection before the fork; children open their own
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(log, w)) for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    assert log.counts() == (N_PROCS * N_QUERIES, N_PROCS * N_QUERIES)
    got = sorted(q for ids in log.pairs(merge_tolerance=None).query_ids for q in ids)
    assert got == sorted(f"w{w}-{i}" for w in range(N_PROCS) for i in range(1, N_QUERIES, 2))


def test_purge_export_import(log, pg_url, tmp_path):
    ids = [log.log_query(np.ones(DIM), ["a"], at=float(t)) for t in range(5)]
    for qid in ids:
        log.feedback(qid, "a")
    assert log.export_jsonl(tmp_path / "x.jsonl") == (5, 5)
    assert log.purge(before=2.5) == (3, 3)
    assert log.purge(query_ids=[ids[4]]) == (1, 1)
    assert log.counts() == (1, 1)
    assert log.import_jsonl(tmp_path / "x.jsonl") == (4, 4)  # the purged ones come back
    assert log.counts() == (5, 5)
    # The export reads back into SQLite the same.
    sqlite = FeedbackLog(tmp_path / "copy.db")
    assert sqlite.import_jsonl(tmp_path / "x.jsonl") == (5, 5)
    assert sqlite.pairs().query_ids == log.pairs().query_ids


def test_no_text_when_opted_out(pg_url, prefix):
    import psycopg

    log = FeedbackLog(pg_url, table_prefix=prefix, store_text=False)
    log.feedback(log.log_query(np.ones(DIM), ["a"], text="private question"), "a")
    with psycopg.connect(pg_url) as conn:
        n = conn.execute(f"SELECT COUNT(*) FROM {prefix}queries WHERE text IS NOT NULL")
        assert n.fetchone()[0] == 0
    log.close()


def test_tune_lock_and_tune(log, pg_url, prefix):
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((20, DIM)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(20)]
    for i in range(10):
        q = docs[i] + 0.5 * rng.standard_normal(DIM).astype(np.float32)
        log.feedback(log.log_query(q, [ids[i], ids[i + 1]], store="s"), ids[i])
    tuner = StoreTuner(ArrayStore(ids, docs), state_dir="memory", solver_params={"gamma": 0.3})
    other = FeedbackLog(pg_url, table_prefix=prefix)
    with other.tune_lock("s"), pytest.raises(TuneInProgressError):
        tune_from_feedback(tuner, log, store="s")
    result = tune_from_feedback(tuner, log, store="s")
    assert result.changed_ids and set(result.changed_ids) <= set(ids[:10])
    other.close()


def test_reconnects_after_a_dropped_connection(pg_url, log):
    """A connection the server dropped (here: terminated by an admin) is replaced, once."""
    import psycopg

    qid = log.log_query(np.ones(DIM), ["a"])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        pids = [
            r[0]
            for r in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        ]
        for pid in pids:  # every other session, this log's included
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    log.feedback(qid, "a")  # the cached connection is dead: a new one, once
    assert log.counts() == (1, 1)
