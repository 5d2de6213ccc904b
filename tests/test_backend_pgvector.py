"""The pgvector backend on a real PostgreSQL 16 + pgvector server (the session's ``pg_url``).

A plain table of unit vectors with text and metadata: the metric read from the index's
operator class, reads in the order asked, unknown ids, in-place writes that keep the other
columns, ``nearest`` against a numpy brute force (no index: exact), and a ``WriteBack`` whose
state lives in the database: fit, then restore from a fresh backend (another process's view).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from nudge_rag import NudgeN, UnknownIdError, WriteBack, resolve_state_dir, tune_store

psycopg = pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
from nudge_rag.backends.pgvector import PgVectorBackend  # noqa: E402

N_DOCS, DIM = 60, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def docs() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((N_DOCS, DIM)))


def _table(url: str, docs: np.ndarray, opclass: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (id text PRIMARY KEY, body text, meta jsonb, "
            f"embedding vector({DIM}))"
        )
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {name} (id, body, meta, embedding) FROM STDIN") as cp,
        ):
            for k, row in enumerate(docs):
                cp.write_row((f"d{k}", f"body {k}", f'{{"k": {k}}}', str(row.tolist())))
        if opclass:
            conn.execute(f"CREATE INDEX ON {name} USING hnsw (embedding {opclass})")
    return name


@pytest.mark.parametrize(
    ("opclass", "distance"),
    [("vector_cosine_ops", "cosine"), ("vector_ip_ops", "dot"), ("vector_l2_ops", "l2")],
)
def test_distance_from_index(pg_url, docs, opclass, distance):
    with PgVectorBackend.from_url(pg_url, table=_table(pg_url, docs, opclass)) as store:
        assert store.distance == distance
        assert store.is_remote and store.default_state_dir() is None


def test_no_index_needs_distance(pg_url, docs):
    table = _table(pg_url, docs, None)
    with pytest.raises(ValueError, match="pass distance="):
        PgVectorBackend.from_url(pg_url, table=table)
    with pytest.raises(ValueError, match="no column 'nope'"):
        PgVectorBackend.from_url(pg_url, table=table, id_column="nope", distance="cosine")


def test_read_write_search(pg_url, docs):
    table = _table(pg_url, docs, None)
    store = PgVectorBackend.from_url(pg_url, table=table, distance="cosine", page_size=7)
    ids = store.list_ids()
    assert sorted(ids) == sorted(f"d{k}" for k in range(N_DOCS)) and store.count() == N_DOCS
    rows = [int(i[1:]) for i in ids]
    np.testing.assert_array_equal(store.get_vectors(ids), docs[rows])  # float32, exact
    np.testing.assert_array_equal(store.get_vectors(ids[::-1]), docs[rows][::-1])
    with pytest.raises(UnknownIdError, match="'nope'"):
        store.get_vectors([ids[0], "nope"])
    new = np.eye(DIM, dtype=np.float32)[:3]
    store.set_vectors(["d0", "d1", "d2"], new)
    store.set_vectors(["d0", "d1", "d2"], new)  # idempotent
    np.testing.assert_array_equal(store.get_vectors(["d0", "d1", "d2"]), new)
    with pytest.raises(UnknownIdError):
        store.set_vectors(["d3", "nope"], new[:2])
    np.testing.assert_array_equal(store.get_vectors(["d3"]), docs[3:4])  # rolled back
    current = docs.copy()
    current[:3] = new
    queries = _unit(np.random.default_rng(1).standard_normal((5, DIM)))
    for k in (1, 5, N_DOCS + 3):
        got_ids, got = store.nearest(queries, k)
        scores = queries @ current.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, N_DOCS)]
        for q in range(queries.shape[0]):
            assert got_ids[q] == [f"d{j}" for j in order[q]]
            np.testing.assert_allclose(got[q, : order.shape[1]], scores[q, order[q]], atol=1e-5)
            assert np.isneginf(got[q, order.shape[1] :]).all()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT body, meta FROM {table} WHERE id = 'd1'").fetchone() == (
            "body 1",
            {"k": 1},
        )
    store.close()


def test_writeback_state_in_the_database(pg_url, docs):
    table = _table(pg_url, docs, "vector_cosine_ops")
    store = PgVectorBackend.from_url(pg_url, table=table)
    assert resolve_state_dir(store) is None  # no folder needed: the database keeps the state
    rng = np.random.default_rng(2)
    answered = [f"d{k}" for k in range(12)]
    queries = _unit(docs[:12] + 0.4 * rng.standard_normal((12, DIM)).astype(np.float32))
    results = {}
    for mode in ("read", "store"):
        wb = WriteBack(store, batch_size=5)
        res = tune_store(wb, NudgeN(gamma=0.3), queries, [[a] for a in answered], passive=mode)
        results[mode] = store.get_vectors(answered)
        assert sorted(res.changed_ids) == sorted(answered)
        # a fresh backend (another process) finds the originals in the database
        other = PgVectorBackend.from_url(pg_url, table=table)
        assert sorted(WriteBack(other).moved_ids()) == sorted(answered)
        assert WriteBack(other).restore() == len(answered)
        other.close()
        np.testing.assert_array_equal(store.get_vectors(answered), docs[:12])
    np.testing.assert_allclose(results["read"], results["store"], atol=1e-6)
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(f"SELECT body, meta FROM {table} WHERE id = 'd4'").fetchone()
        assert row == ("body 4", {"k": 4})
        assert conn.execute(
            "SELECT count(*) FROM nudge_originals WHERE target = %s", (store.target,)
        ).fetchone() == (0,)
    store.close()


def _set_row(url: str, table: str, doc_id: str, vector: np.ndarray) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {table} SET embedding = %s::vector WHERE id = %s",
            (str(vector.tolist()), doc_id),
        )


def _saved(url: str, target: str) -> dict[str, np.ndarray]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, embedding::text FROM nudge_originals WHERE target = %s", (target,)
        ).fetchall()
    return {i: np.asarray(eval(e), dtype=np.float32) for i, e in rows}  # noqa: S307


def test_each_batch_saves_the_originals_of_its_rows(pg_url, docs):
    """A batch's transaction copies its rows' originals from the rows themselves: a row the
    user edits while the plan is written gets that edit back from restore(), not the vector
    read before the plan; a refit keeps first originals, drops the record of a row the user
    edited after it was tuned, and restore() gives every original back."""
    table = _table(pg_url, docs, "vector_cosine_ops")
    store = PgVectorBackend.from_url(pg_url, table=table)
    rng = np.random.default_rng(3)
    edit = _unit(docs[[9, 3]] + 0.3 * rng.standard_normal((2, DIM)).astype(np.float32))

    def fit(answered: list[str], hook=None) -> list[str]:
        idx = [int(a[1:]) for a in answered]
        queries = _unit(docs[idx] + 0.4 * rng.standard_normal((len(idx), DIM)).astype(np.float32))
        wb = WriteBack(store, batch_size=4)
        if hook is not None:
            real = wb._state.write_batch

            def write_batch(kind, done, ids, vectors):
                hook(done, ids)
                real(kind, done, ids, vectors)

            wb._state.write_batch = write_batch
        res = tune_store(wb, NudgeN(gamma=0.3), queries, [[a] for a in answered])
        return sorted(res.changed_ids)

    first = [f"d{k}" for k in range(12)]

    def user_edits_a_later_batch(done, ids):
        if done == 2:  # batch 1 is committed; d9 (batch 3) still holds its original
            _set_row(pg_url, table, "d9", edit[0])

    fit(first, user_edits_a_later_batch)
    saved = _saved(pg_url, store.target)
    assert sorted(saved) == sorted(first)
    np.testing.assert_array_equal(saved["d9"], edit[0])  # what the row held when written
    np.testing.assert_array_equal(saved["d0"], docs[0])
    # The user edits a tuned row; the refit tunes d3 again, d20-d23 anew, d8-d11 go back.
    _set_row(pg_url, table, "d3", edit[1])
    second = [f"d{k}" for k in range(8)] + [f"d{k}" for k in range(20, 24)]
    assert fit(second) == sorted(second)
    saved = _saved(pg_url, store.target)
    assert sorted(saved) == sorted(set(first) | set(second))
    np.testing.assert_array_equal(saved["d3"], edit[1])  # the edit is its original now
    np.testing.assert_array_equal(saved["d0"], docs[0])  # first originals are kept
    np.testing.assert_array_equal(store.get_vectors(["d10"]), docs[[10]])  # moved back
    assert WriteBack(store).restore() == len(saved)
    expected = docs.copy()
    expected[[9, 3]] = edit
    np.testing.assert_array_equal(store.get_vectors([f"d{k}" for k in range(N_DOCS)]), expected)
    assert _saved(pg_url, store.target) == {}
    store.close()


def test_a_batch_is_not_written_without_the_writer_lock(pg_url, docs):
    """write_batch checks, in its own transaction, that this process holds the advisory lock:
    called without it (or after the server freed it), nothing is written."""
    from nudge_rag import WriteBackError

    table = _table(pg_url, docs, "vector_cosine_ops")
    store = PgVectorBackend.from_url(pg_url, table=table)
    wb = WriteBack(store)
    state = wb._state
    with wb.locked("apply"):
        state.save_pending("apply", ["d1"], docs[[2]], 1)
    with pytest.raises(WriteBackError, match="writer lock of .* was lost"):
        state.write_batch("apply", 1, ["d1"], docs[[2]])
    np.testing.assert_array_equal(store.get_vectors(["d1"]), docs[[1]])
    assert _saved(pg_url, store.target) == {}
    with wb.locked("apply"):
        state.write_batch("apply", 1, ["d1"], docs[[2]])
    np.testing.assert_array_equal(store.get_vectors(["d1"]), docs[[2]])
    np.testing.assert_array_equal(_saved(pg_url, store.target)["d1"], docs[1])
    assert wb.status().batches_done == 1
    assert wb.discard_pending() and wb.restore() == 1
    store.close()


def test_resume_saves_the_originals_of_batches_that_never_committed(pg_url, docs):
    """Killed after batch 1: only batch 1's rows have originals. resume() writes the rest,
    each batch copying its rows' originals first, so a row the user edited in between is
    tuned and its edit becomes the original that restore() gives back."""
    from nudge_rag import WriteBackError

    table = _table(pg_url, docs, "vector_cosine_ops")
    store = PgVectorBackend.from_url(pg_url, table=table)
    rng = np.random.default_rng(4)
    answered = [f"d{k}" for k in range(12)]
    queries = _unit(docs[:12] + 0.4 * rng.standard_normal((12, DIM)).astype(np.float32))
    wb = WriteBack(store, batch_size=4)
    state = wb._state
    real = state.write_batch

    def killed_at_batch_2(kind, done, ids, vectors):
        if done == 2:
            raise RuntimeError("killed")
        real(kind, done, ids, vectors)

    state.write_batch = killed_at_batch_2
    with pytest.raises(WriteBackError, match="apply stopped at batch 2 of 3"):
        tune_store(wb, NudgeN(gamma=0.3), queries, [[a] for a in answered])
    _, plan_ids, plan_vecs, _, done = state.load_pending()
    assert done == 1 and sorted(_saved(pg_url, store.target)) == sorted(plan_ids[:4])
    edited = plan_ids[9]  # in batch 3: never written, no original saved
    edit = _unit(rng.standard_normal((1, DIM)))[0]
    _set_row(pg_url, table, edited, edit)
    again = WriteBack(PgVectorBackend.from_url(pg_url, table=table))
    assert again.resume() is True
    np.testing.assert_array_equal(store.get_vectors(plan_ids), plan_vecs)  # the whole plan
    saved = _saved(pg_url, store.target)
    assert sorted(saved) == sorted(plan_ids)
    np.testing.assert_array_equal(saved[edited], edit)
    assert again.restore() == len(plan_ids)
    expected = docs.copy()
    expected[int(edited[1:])] = edit
    np.testing.assert_array_equal(store.get_vectors([f"d{k}" for k in range(N_DOCS)]), expected)
    again.store.close()
    store.close()


def test_query_adapter_in_the_database(pg_url, docs):
    """The adapter is kept in the store's own state: found by a fresh backend, gone on restore."""
    from nudge_rag import StoreTuner

    table = _table(pg_url, docs, "vector_cosine_ops")
    rng = np.random.default_rng(1)
    answers = [[f"d{k % N_DOCS}"] for k in range(120)]
    queries = _unit(docs[[k % N_DOCS for k in range(120)]] + 0.5 * rng.standard_normal((120, DIM)))
    with PgVectorBackend.from_url(pg_url, table=table) as store:
        tuner = StoreTuner(store, query_adapter="on", solver_params={"cv": 3})
        result = tuner.tune_embedded(queries, answers)
        assert result.query_adapter is not None
        with PgVectorBackend.from_url(pg_url, table=table) as other:
            found = WriteBack(other).query_adapter()
            np.testing.assert_allclose(found.matrix_, result.query_adapter.matrix_)
            assert WriteBack(other).status().query_adapter["lambda"] == found.lambda_
            assert WriteBack(other).restore() > 0
            assert WriteBack(other).query_adapter() is None
            assert WriteBack(other).status().query_adapter is None
