"""FeedbackLog on SQLite: logging, feedback checks, pairs, export/import, purge, concurrency,
re-tunes while the app keeps logging, and a re-tune killed mid-write that resumes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag import (
    ArrayStore,
    FeedbackLog,
    NudgeN,
    QuerySet,
    StoreTuner,
    TuneInProgressError,
    UnknownIdError,
    tune_from_feedback,
)
from nudge_rag._feedback import _merge_groups

DIM = 8


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def log(tmp_path):
    with FeedbackLog(tmp_path / "feedback.db") as opened:
        yield opened


# ---------------------------------------------------------------------- logging
def test_query_round_trip(log):
    vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    qid = log.log_query(vec, ["b", "a", "c"], text="what is x?", store="docs", at=1000.5)
    got = log.get_query(qid)
    assert (got.query_id, got.time, got.store, got.text) == (qid, 1000.5, "docs", "what is x?")
    assert got.shown_ids == ["b", "a", "c"]  # rank order kept
    assert_array_equal(got.vector, vec)
    assert got.vector.dtype == np.float32
    assert log.counts() == (1, 0)
    assert log.kind == "sqlite"


def test_own_query_id_and_duplicates(log):
    assert log.log_query(np.ones(DIM), ["a"], query_id="req-1") == "req-1"
    with pytest.raises(ValueError, match="query_id 'req-1' is already"):
        log.log_query(np.ones(DIM), ["a"], query_id="req-1")


@pytest.mark.parametrize(
    ("vector", "match"),
    [(np.zeros((2, 3)), "1-D"), ([], "non-empty"), ([1.0, np.nan], "NaN"), ("abc", "numbers")],
)
def test_bad_vectors(log, vector, match):
    with pytest.raises((ValueError, TypeError), match=match):
        log.log_query(vector, ["a"])


def test_bad_locations(tmp_path):
    with pytest.raises(ValueError, match="in-memory"):
        FeedbackLog(":memory:")
    with pytest.raises(ValueError, match="is a folder"):
        FeedbackLog(tmp_path)
    with pytest.raises(ValueError, match="table_prefix"):
        FeedbackLog(tmp_path / "a.db", table_prefix="x; DROP")


def test_wal_mode(tmp_path):
    FeedbackLog(tmp_path / "f.db").log_query(np.ones(DIM), ["a"])
    import sqlite3

    with sqlite3.connect(tmp_path / "f.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pickles_as_its_settings_and_copies_as_itself(tmp_path):
    import copy
    import pickle

    log = FeedbackLog(tmp_path / "f.db", store_text=False, table_prefix="app_")
    qid = log.log_query(np.ones(DIM), ["a"], text="secret", store="docs")
    other = pickle.loads(pickle.dumps(log))
    assert other is not log and (other.store_text, other.table_prefix) == (False, "app_")
    other.feedback(qid, "a")
    assert log.counts() == (1, 1) and log.stores() == ["docs"]
    assert copy.deepcopy(log) is log and copy.copy(log) is log


# ---------------------------------------------------------------------- feedback checks
def test_feedback_for_unknown_query_or_unshown_doc(log):
    qid = log.log_query(np.ones(DIM), ["a", "b"])
    with pytest.raises(UnknownIdError, match="'nope' is not in the feedback log") as err:
        log.feedback("nope", "a")
    assert err.value.ids == ["nope"]
    with pytest.raises(UnknownIdError, match="document 'z' was not shown") as err:
        log.feedback(qid, "z")
    assert err.value.ids == ["z"]
    with pytest.raises(ValueError, match="weight"):
        log.feedback(qid, "a", weight=0)
    with pytest.raises(TypeError, match="relevant"):
        log.feedback(qid, "a", relevant="yes")
    assert log.counts() == (1, 0)  # nothing was recorded by the refused calls
    log.feedback(qid, "b", relevant=False)
    assert log.counts() == (1, 1)


# ---------------------------------------------------------------------- pairs
def test_pairs_count_cancel_and_threshold(log):
    rng = np.random.default_rng(1)
    v = unit(rng, 3)
    q0 = log.log_query(v[0], ["a", "b", "c"], text="q0", store="s")
    q1 = log.log_query(v[1], ["a", "d"], text="q1", store="s")
    q2 = log.log_query(v[2], ["e"], text="q2", store="other")
    log.feedback(q0, "a")
    log.feedback(q0, "b")
    log.feedback(q0, "b", relevant=False)  # cancels the thumbs-up on b
    log.feedback(q1, "d", weight=2.0)
    log.feedback(q1, "a", weight=0.5)
    log.feedback(q2, "e")
    pairs = log.pairs(store="s")
    # q0: a net 1 (kept), b net 0 (cancelled); q1: d net 2 (kept), a net 0.5 (< 1).
    assert pairs.answer_ids == [["a"], ["d"]]
    assert pairs.texts == ["q0", "q1"]
    assert pairs.query_ids == [[q0], [q1]]
    assert (pairs.n_events, pairs.n_cancelled, pairs.n_pairs) == (5, 2, 2)
    assert_allclose(pairs.embeddings, v[:2])
    assert log.pairs(store="s", min_count=2).answer_ids == [["d"]]
    assert log.pairs(store="s", min_count=0.5).answer_ids == [["a"], ["a", "d"]]
    assert len(log.pairs()) == 3  # every store
    assert pairs.as_text_pairs() == [("q0", "a"), ("q1", "d")]


def test_pairs_when_everything_cancels(log):
    qid = log.log_query(np.ones(DIM), ["a"])
    log.feedback(qid, "a")
    log.feedback(qid, "a", relevant=False)
    pairs = log.pairs()
    assert (len(pairs), pairs.n_events, pairs.n_cancelled) == (0, 2, 1)
    assert pairs.embeddings.shape == (0, DIM)
    assert len(log.pairs(since=time.time() + 60)) == 0  # no events in the window


def test_pairs_merge_near_duplicates(log):
    rng = np.random.default_rng(2)
    v = unit(rng, 2)
    near = v[0] * 3.0 + 1e-5  # the same question again: scaled, and a float's noise off
    ids = [
        log.log_query(v[0], ["a", "b"], text="first"),
        log.log_query(v[1], ["a"], text="other"),
        log.log_query(near, ["a", "b"], text="again"),
    ]
    log.feedback(ids[0], "a")
    log.feedback(ids[2], "a", relevant=False)  # the repeat asker says a did not help
    log.feedback(ids[2], "b")
    log.feedback(ids[1], "a")
    merged = log.pairs()
    assert merged.answer_ids == [["b"], ["a"]]
    assert merged.query_ids == [[ids[0], ids[2]], [ids[1]]]
    assert merged.texts == ["first", "other"]
    assert_allclose(merged.embeddings[0], (v[0] + near) / 2, rtol=1e-6)
    apart = log.pairs(merge_tolerance=None)  # no merging: a is +1 on one and -1 on the other
    assert apart.answer_ids == [["a"], ["a"], ["b"]]


@pytest.mark.parametrize(("dim", "tol", "n_base"), [(16, 1e-3, 40), (2, 0.05, 200), (3, 0.1, 200)])
def test_merge_groups_matches_brute_force(dim, tol, n_base):
    rng = np.random.default_rng(3)
    base = unit(rng, n_base, dim=dim)
    near = base[:15] + 0.2 * tol * unit(rng, 15, dim=dim)
    rows = np.concatenate([base, near, base[:5]])
    rows = rows[rng.permutation(rows.shape[0])]
    got = _merge_groups(rows, tol)
    u = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    close = np.linalg.norm(u[:, None] - u[None], axis=2) <= tol
    from scipy.sparse.csgraph import connected_components

    _, expected = connected_components(close, directed=False)
    # Same partition, numbered by first appearance.
    for i in range(rows.shape[0]):
        assert_array_equal(got == got[i], expected == expected[i])
    assert got[0] == 0 and np.all(np.diff(np.maximum.accumulate(got)) <= 1)
    assert len(set(got.tolist())) <= n_base


def test_pairs_time_window(log):
    q = log.log_query(np.ones(DIM), ["a", "b", "c"], at=0.0)
    now = time.time()
    log.feedback(q, "a", at=now - 10 * 86400)
    log.feedback(q, "b", at=now - 3600)
    log.feedback(q, "c", at=datetime.fromtimestamp(now - 60))
    assert log.pairs(since=timedelta(days=1)).answer_ids == [["b", "c"]]
    assert log.pairs(until=now - 120).answer_ids == [["a", "b"]]
    assert log.pairs(since=now - 7200, until=now - 120).answer_ids == [["b"]]
    assert len(log.pairs(since=now)) == 0


def test_pairs_mixed_dimensions_need_a_store(log):
    log.feedback(log.log_query(np.ones(4), ["a"], store="small"), "a")
    log.feedback(log.log_query(np.ones(8), ["a"], store="big"), "a")
    with pytest.raises(ValueError, match="pass store="):
        log.pairs()
    assert log.pairs(store="big").embeddings.shape == (1, 8)


# ---------------------------------------------------------------------- export / import
def test_export_import_round_trip(log, tmp_path):
    rng = np.random.default_rng(4)
    v = unit(rng, 3)
    ids = [log.log_query(v[i], ["a", "b"], text=f"q{i}", store="s") for i in range(3)]
    log.feedback(ids[0], "a")
    log.feedback(ids[1], "b", relevant=False, weight=0.5)
    out = tmp_path / "export.jsonl"
    assert log.export_jsonl(out) == (3, 2)
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["query"] * 3 + ["feedback"] * 2
    other = FeedbackLog(tmp_path / "other.db")
    assert other.import_jsonl(out) == (3, 2)
    assert other.import_jsonl(out) == (0, 0)  # idempotent
    for qid in ids:
        a, b = log.get_query(qid), other.get_query(qid)
        assert (a.time, a.store, a.text, a.shown_ids) == (b.time, b.store, b.text, b.shown_ids)
        assert_array_equal(a.vector, b.vector)  # float32 exact through JSON
    assert other.pairs().answer_ids == log.pairs().answer_ids


def test_import_is_all_or_nothing(log, tmp_path):
    good = {"kind": "query", "query_id": "q1", "time": 1.0, "store": "s", "text": None,
            "vector": [1.0, 0.0], "shown_ids": ["a"]}  # fmt: skip
    bad_event = {"kind": "feedback", "event_id": "e1", "query_id": "q1", "doc_id": "zz",
                 "relevant": True, "weight": 1.0, "time": 2.0}  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad_event) + "\n")
    with pytest.raises(UnknownIdError, match="'zz' was not shown"):
        log.import_jsonl(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2"):
        log.import_jsonl(path)
    assert log.counts() == (0, 0)


# ---------------------------------------------------------------------- privacy
def test_purge_by_age_and_by_id(log):
    now = time.time()
    old = [log.log_query(np.ones(DIM), ["a"], at=now - 40 * 86400) for _ in range(3)]
    new = [log.log_query(np.ones(DIM), ["a"], at=now - 60) for _ in range(2)]
    for qid in old + new:
        log.feedback(qid, "a")
    log.feedback(old[0], "a", relevant=False)
    assert log.purge(older_than=timedelta(days=30)) == (3, 4)
    assert log.counts() == (2, 2)
    for qid in old:
        with pytest.raises(UnknownIdError):
            log.get_query(qid)
        with pytest.raises(UnknownIdError, match="purged"):
            log.feedback(qid, "a")
    assert log.purge(query_ids=[new[0], "never-logged"]) == (1, 1)
    assert [q for ids in log.pairs().query_ids for q in ids] == [new[1]]
    assert log.purge(before=datetime.now() + timedelta(seconds=5)) == (1, 1)
    assert log.counts() == (0, 0)
    with pytest.raises(ValueError, match="exactly one"):
        log.purge()
    with pytest.raises(TypeError, match="not one string"):
        log.purge(query_ids="abc")


def test_opting_out_of_text_stores_no_text(tmp_path):
    secret = "my secret medical question zebra-7731"
    path = tmp_path / "private.db"
    log = FeedbackLog(path, store_text=False)
    qid = log.log_query(np.ones(DIM), ["a"], text=secret)
    log.feedback(qid, "a")
    assert log.get_query(qid).text is None
    assert log.pairs().texts == [None]
    with pytest.raises(ValueError, match="no text"):
        log.pairs().as_text_pairs()
    export = tmp_path / "x.jsonl"
    log.export_jsonl(export)
    # Import of a file that has text drops it too.
    line = {"kind": "query", "query_id": "q2", "time": 1.0, "store": "default",
            "text": secret, "vector": [1.0] * DIM, "shown_ids": ["a"]}  # fmt: skip
    (tmp_path / "in.jsonl").write_text(json.dumps(line) + "\n")
    log.import_jsonl(tmp_path / "in.jsonl")
    assert log.get_query("q2").text is None
    log.close()
    needle = secret.encode()
    for f in [*tmp_path.glob("private.db*"), export]:
        assert needle not in f.read_bytes(), f


# ---------------------------------------------------------------------- concurrency
N_PROCS, N_QUERIES = 4, 500


def _writer(worker: int, log: FeedbackLog) -> None:
    rng = np.random.default_rng(worker)
    vecs = rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)
    for i in range(N_QUERIES):
        qid = log.log_query(vecs[i], [f"d{i}", f"d{i + 1}"], text=f"w{worker}-{i}",
                            query_id=f"w{worker}-{i}")  # fmt: skip
        log.feedback(qid, f"d{i + 1}", relevant=bool(i % 2))
    log.close()


def _check_all_logged(log: FeedbackLog) -> None:
    assert log.counts() == (N_PROCS * N_QUERIES, N_PROCS * N_QUERIES)
    pairs = log.pairs(merge_tolerance=None)
    got = sorted(q for ids in pairs.query_ids for q in ids)
    expected = sorted(f"w{w}-{i}" for w in range(N_PROCS) for i in range(1, N_QUERIES, 2))
    assert got == expected


@pytest.mark.slow  # four writer processes: 2-25 s
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_four_processes_lose_nothing(tmp_path, start):
    """4 processes x 500 queries, each with feedback, all at once: every row is there.

    ``fork``: the children inherit a log the parent has used; ``spawn``: fresh interpreters
    get it pickled (they open the same file).
    """
    log = FeedbackLog(tmp_path / "shared.db")
    log.log_query(np.ones(DIM), ["x"], query_id="parent")
    log.purge(query_ids=["parent"])
    ctx = multiprocessing.get_context(start)
    procs = [ctx.Process(target=_writer, args=(w, log)) for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    _check_all_logged(log)


def test_threads_that_end_leave_no_open_connections(log):
    """A thread per request: each opens a connection; the ones of ended threads get closed."""

    def open_files() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(log._db.path))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    log.counts()
    for _ in range(30):
        t = threading.Thread(target=log.log_query, args=(np.ones(DIM), ["a"]))
        t.start()
        t.join()
    log.counts()
    assert log.counts() == (30, 0)
    assert open_files() <= 3  # this thread's and the last thread's (closed on the next open)


# ---------------------------------------------------------------------- tuning
def _task(seed: int = 0, n_docs: int = 60, n_queries: int = 40):
    """Unit documents; each query near one document, which it is shown with three others."""
    rng = np.random.default_rng(seed)
    docs = unit(rng, n_docs)
    target = rng.integers(0, n_docs, n_queries)
    queries = docs[target] + 0.6 * unit(rng, n_queries)
    others = rng.integers(0, n_docs, (n_queries, 3))
    ids = [f"d{i}" for i in range(n_docs)]
    return ids, docs, queries.astype(np.float32), target, others


def _log_task(log: FeedbackLog, queries, target, others, store="s") -> None:
    for q, t, o in zip(queries, target, others):
        shown = list(dict.fromkeys([f"d{t}", *(f"d{i}" for i in o)]))
        log.feedback(log.log_query(q, shown, store=store), f"d{t}")


def _reference(ids, docs, pairs):
    """A fresh NudgeN fitted on the same pairs, from the original vectors."""
    rows = {d: r for r, d in enumerate(ids)}
    train = QuerySet(pairs.embeddings, [[rows[d] for d in a] for a in pairs.answer_ids])
    return NudgeN(gamma=0.3).fit(docs, train).embeddings_


def test_tune_from_feedback_matches_a_direct_fit_and_never_compounds(log):
    ids, docs, queries, target, others = _task()
    _log_task(log, queries, target, others)
    store = ArrayStore(ids, docs)
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
    for _ in range(2):  # the second run starts from the originals: same result
        result = tune_from_feedback(tuner, log, store="s")
        assert_allclose(store.vectors, _reference(ids, docs, result.feedback_pairs), atol=1e-6)
    assert result.changed_ids and result.gamma == 0.3
    assert len(result.feedback_pairs) == len(queries)


def test_tune_from_feedback_errors(log, caplog):
    ids, docs, queries, target, others = _task()
    store = ArrayStore(ids, docs)
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
    with pytest.raises(ValueError, match="no positive feedback in the log for store 's'"):
        tune_from_feedback(tuner, log, store="s")
    _log_task(log, queries, target, others)
    gone = log.log_query(queries[0], ["deleted-doc"], store="s")
    log.feedback(gone, "deleted-doc")
    with caplog.at_level("WARNING"):
        tune_from_feedback(tuner, log, store="s")
    assert "no longer in the store" in caplog.text and "deleted-doc" in caplog.text
    with log.tune_lock("s"), pytest.raises(TuneInProgressError, match="another re-tune"):
        tune_from_feedback(tuner, FeedbackLog(log._db.path), store="s")


def test_retune_while_queries_and_feedback_keep_arriving(log):
    """Threads keep logging while re-tunes run; nothing is lost, the next run sees it all."""
    ids, docs, queries, target, others = _task(seed=5, n_queries=60)
    _log_task(log, queries[:20], target[:20], others[:20])
    store = ArrayStore(ids, docs)
    tuner = StoreTuner(store, state_dir="memory", batch_size=7, solver_params={"gamma": 0.3})
    stop = threading.Event()
    written = []

    def app(worker: int) -> None:
        rng = np.random.default_rng(100 + worker)
        n = 0
        while not stop.is_set() and n < 400:
            k = int(rng.integers(20, 60))
            shown = [f"d{target[k]}", f"d{others[k][0]}"]
            qid = log.log_query(queries[k], shown, store="s", query_id=f"t{worker}-{n}")
            log.feedback(qid, shown[0])
            n += 1
        written.append(n)

    threads = [threading.Thread(target=app, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        runs = 0
        while runs < 5:
            tune_from_feedback(tuner, log, store="s")
            runs += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert log.counts() == (20 + sum(written), 20 + sum(written))
    final = tune_from_feedback(tuner, log, store="s")
    assert sum(len(q) for q in final.feedback_pairs.query_ids) == 20 + sum(written)
    assert_allclose(store.vectors, _reference(ids, docs, final.feedback_pairs), atol=1e-6)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from nudge_rag import ArrayStore, FeedbackLog, StoreTuner, tune_from_feedback

    class FileStore(ArrayStore):
        '''An ArrayStore saved to its file after every write (a store that outlives us).'''
        path = None
        writes = 0
        kill_at = None

        def set_vectors(self, ids, vectors):
            super().set_vectors(ids, vectors)
            self.save(self.path)
            FileStore.writes += 1
            if FileStore.writes == FileStore.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    folder, kill_at = sys.argv[1], int(sys.argv[2])
    store = FileStore.load(os.path.join(folder, "store.npz"))
    store.path = os.path.join(folder, "store.npz")
    FileStore.kill_at = kill_at
    tuner = StoreTuner(store, state_dir=os.path.join(folder, "state"), batch_size=5,
                       solver_params={"gamma": 0.3})
    result = tune_from_feedback(tuner, FeedbackLog(os.path.join(folder, "feedback.db")), store="s")
    print(len(result.changed_ids))
    """
)


def test_killed_retune_resumes(log, tmp_path):
    ids, docs, queries, target, others = _task(seed=6)
    _log_task(log, queries, target, others)
    folder = log._db.path.parent
    ArrayStore(ids, docs).save(folder / "store.npz")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, str(script), str(folder), "3"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == -signal.SIGKILL, run.stderr
    store = ArrayStore.load(folder / "store.npz")
    tuner = StoreTuner(store, state_dir=folder / "state", batch_size=5,
                       solver_params={"gamma": 0.3})  # fmt: skip
    assert tuner.writeback.has_pending
    # Feedback that arrives after the crash is kept for the re-run.
    late = log.log_query(queries[0], ["d1", "d2"], store="s")
    log.feedback(late, "d2")
    result = tune_from_feedback(tuner, log, store="s")  # finishes the pending plan, re-tunes
    assert not tuner.writeback.has_pending
    assert late in {q for ids_ in result.feedback_pairs.query_ids for q in ids_}
    assert_allclose(store.vectors, _reference(ids, docs, result.feedback_pairs), atol=1e-6)
    assert tuner.restore() > 0
    assert_allclose(store.vectors, docs)
