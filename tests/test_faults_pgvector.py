"""Write-back into PostgreSQL + pgvector survives faults (issue 10; the suite of test_faults).

The write-back state of a pgvector table lives in side tables of its own database
(``nudge_originals``, ``nudge_pending``, ``nudge_plans``...), one transaction per step, so the
kill points are transactions, not file renames. A child process (``tests/fault_child.py``,
``PgTarget``) tunes a table through the core API (``WriteBack`` + ``tune_store`` on
``PgVectorBackend.from_url``) or LangChain's ``PGVector`` (opened by the harness's pgvector
kind, ``PgVectorKind.open``) through ``NudgeRetriever`` and SIGKILLs itself inside a
transaction, before its COMMIT: the plan's, batch k's (its UPDATE ran, or only its first m
rows; its rows, the originals of those rows and its progress commit together) or the last one
(plan -> applied); or the parent kills it at a seeded random moment. Kills after a transaction
committed (the plan, batch k, the last batch) are the store contract's kill test on pgvector
with its state in the database (``tests/stores/test_pgvector.py``).

Each case runs in its own database, copied from one template (``CREATE DATABASE ...
TEMPLATE``), so every case starts from identical rows and ids. After each kill: the same ids
and count, every vector original or tuned, exactly as many rows tuned as batches committed
(a batch is all or nothing), text and metadata unchanged; ``resume()`` (a new process) then
reaches exactly the uninterrupted result, or ``restore()`` the originals. Also: readers
querying during a write-back get k results, and a PostgreSQL server killed mid write-back
gives the writer a nudge-rag error that says what to do; after a restart ``resume()`` finishes.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
pytest.importorskip("langchain_postgres", reason="pip install 'nudge-rag[postgres]'")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fault_child as fc  # noqa: E402
from stores.test_pgvector import PgVectorKind  # noqa: E402
from test_faults import (  # noqa: E402
    N_BATCHES,
    N_MOVED,
    _reader,
    check_consistent,
    finish,
    read,
    run_child,
    template_docs,
)

from nudge_rag import WriteBackError  # noqa: E402

# each case kills a process or restarts PostgreSQL: 5-8 s; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

BATCH = 3  # make_data() moves 15 docs: 5 batches of 3
TEXT = sorted((i, f"document {k}", k) for k, i in enumerate(fc.doc_ids("pgvector")))


# ---------------------------------------------------------------------- databases
def _admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _drop(url: str, name: str) -> None:
    """Drop a test database; a server that is down is reported, not raised (the session
    fixture deletes its data folder anyway, and the test's own failure is what matters)."""
    try:
        _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except psycopg.OperationalError as err:
        warnings.warn(f"could not drop test database {name}: {err}", stacklevel=2)


@pytest.fixture(scope="module")
def pg_server(own_pg_server):
    """This module kills and restarts its server: its own, never the session's."""
    return own_pg_server


@pytest.fixture(scope="module")
def pg_template(pg_url):
    """A database with ``make_data()`` twice (no open connections: a template): the plain
    table of ``fc.make_pg_database`` and the harness's LangChain ``PGVector`` collection."""
    name = f"faults_tmpl_{uuid.uuid4().hex[:8]}"
    _admin(pg_url, f"CREATE DATABASE {name}")
    try:
        url = fc.pg_url_for(pg_url, name)
        fc.make_pg_database(url)
        PgVectorKind().fill(url, template_docs(), "exact", fc.COLLECTION).close()
        yield name
    finally:
        _drop(pg_url, name)


@pytest.fixture
def new_db(pg_url, pg_template):
    """A factory of fresh copies of the template; each is dropped at the end of the test."""
    made: list[str] = []

    def make() -> str:
        name = f"faults_{uuid.uuid4().hex[:10]}"
        _admin(pg_url, f"CREATE DATABASE {name} TEMPLATE {pg_template}")
        made.append(name)
        return fc.pg_url_for(pg_url, name)

    yield make
    for name in made:
        _drop(pg_url, name)


def new_args(url: str, framework: str) -> dict:
    return {
        "store": "pgvector",
        "framework": framework,
        "uri": url,
        "batch_size": BATCH,
        "collection": fc.COLLECTION,
    }


_REFERENCE: dict[str, dict] = {}


def reference(framework: str, new_db) -> dict:
    """Originals and the uninterrupted result on an identical database (cached per framework)."""
    if framework not in _REFERENCE:
        args = new_args(new_db(), framework)
        ids, before = read(args)
        target = fc.open_target(args)
        try:
            result = target.fit()
        finally:
            target.close()
        assert len(result.changed_ids) == N_MOVED
        ids2, after = read(args)
        assert ids2 == ids
        moved = ~np.all(before == after, axis=1)
        assert sorted(np.asarray(ids)[moved].tolist()) == sorted(result.changed_ids)
        assert fc.pg_text(args) == TEXT
        _REFERENCE[framework] = {"ids": ids, "orig": before, "tuned": after}
    return _REFERENCE[framework]


def wait_for_sessions_to_end(
    url: str, timeout: float = 15.0, what: str = "the killed child's sessions did not end"
) -> None:
    """Wait until no other session is connected to the database at ``url``: the killed
    child's sessions (the server rolls them back and frees the advisory lock a moment after
    the client died), or, at the end of a test, anything this process left open."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(query).fetchone()[0]:
            assert time.monotonic() < deadline, what
            time.sleep(0.02)


def pending_progress(args: dict) -> tuple[str | None, int, int]:
    """``(kind of the pending plan, batches done, originals saved)`` as another process sees
    them."""
    target = fc.open_target(args)
    try:
        status = target.writeback.status()
    finally:
        target.close()
    return status.pending, status.batches_done, status.n_originals


# ---------------------------------------------------------------------- kill points
def _commit(method: str, nth: int = 1) -> dict:
    return {"at": "pg_commit", "method": method, "nth": nth}


# (kill, rows tuned when it hits, batches recorded as done; None: no plan pending). A first
# fit saves no originals before its plan: each batch's transaction copies its rows' originals,
# so the originals saved are always exactly the rows tuned. Kills after a transaction
# committed (the plan saved, batch k written, the last batch written before the plan is
# applied) are the store contract's kill test on a pgvector table with its state in the
# database (tests/stores/test_pgvector.py: status, restore, then resume after the same kill);
# these are kills inside a transaction, before its COMMIT.
PRE_PLAN = [
    (_commit("save_pending"), 0, None),  # the plan's transaction never commits
]
IN_PLAN = [
    # batch k's UPDATE ran (all its rows, or its first m) but never committed
    *((_commit("write_batch", k), BATCH * (k - 1), k - 1) for k in (2, 4)),
    ({"at": "pg_partial", "batch": 3, "part": 2}, 2 * BATCH, 2),
    (_commit("finish_apply"), N_MOVED, N_BATCHES),  # every batch written, plan not yet applied
]


def _pid(kill: dict) -> str:
    return "-".join(str(kill[k]) for k in ("at", "method", "nth", "batch", "part") if k in kill)


# (framework, kill, rows tuned, batches done, then resume or restore)
CASES = [
    ("core", *PRE_PLAN[0], "resume"),  # no plan: a new fit
    ("core", *IN_PLAN[0], "resume"),
    ("core", *IN_PLAN[1], "restore"),
    ("core", *IN_PLAN[2], "resume"),
    ("core", *IN_PLAN[3], "resume"),
]
# LangChain (each child ~3 s): batch 3 half written, uncommitted (then restore); batch 2 not
# committed (then resume); the plan not committed (then a new fit)
CASES += [
    ("langchain", *IN_PLAN[2], "restore"),
    ("langchain", *IN_PLAN[0], "resume"),
    ("langchain", *PRE_PLAN[0], "restore"),
]


@pytest.mark.parametrize(
    ("framework", "kill", "n_tuned", "done", "branch"),
    CASES,
    ids=[f"{f}-{_pid(k)}" for f, k, _, _, _ in CASES],
)
def test_killed(framework, kill, n_tuned, done, branch, new_db):
    ref = reference(framework, new_db)
    args = new_args(new_db(), framework)
    assert run_child(args, kill) == -9
    wait_for_sessions_to_end(args["uri"])
    tuned = check_consistent(args, ref)
    assert int(tuned.sum()) == n_tuned  # each batch is one transaction: all or nothing
    # ... with its originals and its progress
    assert pending_progress(args) == (None if done is None else "apply", done or 0, n_tuned)
    assert fc.pg_text(args) == TEXT
    finish(args, ref, branch, plan_expected=done is not None, n_saved=n_tuned)
    _, vectors = read(args)
    if branch == "resume" and done is not None:
        assert np.array_equal(vectors, ref["tuned"])  # exactly the uninterrupted result
    if done is None:
        # Nothing pending: the table is untouched, and a new fit gives the uninterrupted result.
        assert np.array_equal(vectors, ref["orig"])
        target = fc.open_target(args)
        try:
            target.fit()
        finally:
            target.close()
        assert np.array_equal(read(args)[1], ref["tuned"])
    assert fc.pg_text(args) == TEXT
    # Every backend, lock and status() call of this process closed what it opened.
    wait_for_sessions_to_end(args["uri"], timeout=5, what="connections were left open")


@pytest.mark.parametrize("seed", [0, 1])
def test_timed_kill(seed, new_db):
    """The parent kills at a seeded random moment of a slowed write-back (unplanned points)."""
    ref = reference("core", new_db)
    args = new_args(new_db(), "core")
    delay = random.Random(seed).uniform(0.0, 0.1 + N_BATCHES * 0.03)
    run_child(args, None, delay=delay, slow=0.03)
    wait_for_sessions_to_end(args["uri"])
    n_saved = pending_progress(args)[2]
    assert int(check_consistent(args, ref).sum()) == n_saved  # originals = rows tuned
    finish(args, ref, "resume" if seed % 2 else "restore", plan_expected=None, n_saved=n_saved)
    assert fc.pg_text(args) == TEXT


# ---------------------------------------------------------------------- readers
K = 5


READERS = [
    ("core", "another_backend"),  # a second client of the table (HNSW index scan)
    ("core", "shared_backend"),  # the writer's own backend object, from another thread
    ("langchain", "retriever"),  # NudgeRetriever.invoke on the retriever being fitted
]


@pytest.mark.parametrize(("framework", "reader"), READERS, ids=[r for _, r in READERS])
def test_readers_get_k_results_during_a_write_back(framework, reader, new_db):
    from nudge_rag.backends.pgvector import PgVectorBackend

    args = new_args(new_db(), framework)
    target = fc.open_target(args)
    known = set(fc.doc_ids("pgvector"))
    other = None
    if reader == "another_backend":
        other = PgVectorBackend.from_url(args["uri"], table=fc.PG_TABLE)

        def query(q):
            return other.nearest(q[None, :], K)[0][0]
    elif reader == "shared_backend":
        store = target.store

        def query(q):
            return store.nearest(q[None, :], K)[0][0]
    else:
        questions = itertools.cycle(text for text, _ in fc.train_pairs(args))

        def query(_q):
            return [d.id for d in target.obj.invoke(next(questions), k=K)]

    state = target.writeback._state
    real_batch = state.write_batch
    committed: list[float] = []

    def slow_batch(*a, **kw):
        time.sleep(0.05)
        real_batch(*a, **kw)
        committed.append(time.monotonic())

    state.write_batch = slow_batch
    stop, errors, seen = threading.Event(), [], []
    thread = threading.Thread(target=_reader, args=(query, known, stop, errors, seen, 20))
    thread.start()
    try:
        time.sleep(0.1)
        target.fit()
    finally:
        stop.set()
        thread.join(30)
        target.close()
        if other is not None:
            other.close()
    assert not errors, errors[0]
    assert len(committed) == N_BATCHES
    during = [n for t, n in seen if committed[0] < t < committed[-1]]
    assert len(during) >= N_BATCHES, "the reader did not query while batches were committed"
    assert min(n for _, n in seen) == K


# ---------------------------------------------------------------------- server killed
def _healthy(server, timeout: float = 60.0) -> None:
    """Restart the session's server if it is down and wait until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            server.restart()
            time.sleep(0.2)


@pytest.mark.parametrize("when", ["before_batch_3", "restarted_before_batch_3", "saving_the_plan"])
def test_server_killed_mid_writeback(when, pg_server, new_db):
    """The server dies before batch 3 (or while the plan is saved): a WriteBackError that says
    what to do; after a restart a new process finishes to the uninterrupted result. A server
    that is back at once has freed the writer lock: the writer stops instead of reconnecting
    and going on unprotected."""
    ref = reference("core", new_db)
    args = new_args(new_db(), "core")
    target = fc.open_target(args)
    state = target.writeback._state
    if when != "saving_the_plan":
        real_batch, calls = state.write_batch, []

        def write_batch(*a, **kw):
            calls.append(1)
            if len(calls) == 3:
                pg_server.kill()
                if when == "restarted_before_batch_3":
                    _healthy(pg_server)
            real_batch(*a, **kw)

        state.write_batch = write_batch
    else:
        real_save = state.save_pending

        def save_pending(*a, **kw):
            pg_server.kill()
            real_save(*a, **kw)

        state.save_pending = save_pending
    try:
        with pytest.raises(WriteBackError) as info:
            target.fit()
    finally:
        _healthy(pg_server)  # the next tests of this module use it too
    message = str(info.value)
    assert "public.faults_docs" in message
    if when != "restarted_before_batch_3":
        assert "***@" in message  # the server, without its password
        assert "OperationalError" in message  # what the driver said, as text
    target.close()
    if when != "saving_the_plan":
        assert "apply stopped at batch 3 of 5" in message
        assert "call resume() to finish or restore() to put the originals back" in message
        if when == "restarted_before_batch_3":
            assert "writer lock of public.faults_docs was lost" in message
        assert check_consistent(args, ref).sum() == 2 * BATCH  # batches 1 and 2 committed
        assert pending_progress(args) == ("apply", 2, 2 * BATCH)
        finish(args, ref, "resume", plan_expected=True)
    else:
        assert "cannot save the write-back plan" in message
        assert "nothing was written: run the fit (or restore()) again" in message
        assert not check_consistent(args, ref).any()
        assert pending_progress(args) == (None, 0, 0)  # no originals before the plan
        again = fc.open_target(args)
        try:
            assert again.resume() is False
            again.fit()
        finally:
            again.close()
    assert np.array_equal(read(args)[1], ref["tuned"])
    assert fc.pg_text(args) == TEXT
