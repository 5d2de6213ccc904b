"""The LanceDB backend against real LanceDB tables in a temporary folder.

Without an index a table's search ranks by l2 (the distance reported); with an IVF index
the index's distance type (cosine, dot) is. For each: ids and count, vectors in the order
asked, unknown ids, ``merge_insert`` writes that keep the text and metadata columns (one new
table version per write, the originals back as a further version on restore), ``nearest``
against a numpy brute force (flat search is exact; an IVF_FLAT index probing every partition
is too), the state folder next to the table. Then the refusals, and ``tune_store`` on
nfcorpus: store-side validation picks the read mode's gamma.
"""

from __future__ import annotations

import numpy as np
import pytest

lancedb = pytest.importorskip("lancedb", reason="pip install 'nudge-rag[lancedb]'")
pa = pytest.importorskip("pyarrow", reason="pip install 'nudge-rag[lancedb]'")

from nudge_rag import NudgeN  # noqa: E402
from nudge_rag._errors import UnknownIdError  # noqa: E402
from nudge_rag._tune import tune_store  # noqa: E402
from nudge_rag._writeback import WriteBack  # noqa: E402
from nudge_rag.backends import LanceDBBackend  # noqa: E402

N_DOCS, DIM = 300, 16
TOL = 1e-5
IDS = [f"doc-{i:03d}" for i in range(N_DOCS)]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((N_DOCS, DIM)))


def _arrow(ids, vectors) -> pa.Table:
    return pa.table(
        {
            "id": ids,
            "text": [f"text of {i}" for i in ids],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            "metadata": [{"year": 2000 + k, "source": f"s{k % 3}"} for k in range(len(ids))],
        }
    )


def _table(folder, name, vectors, index: str | None = None):
    table = lancedb.connect(folder).create_table(name, data=_arrow(IDS, vectors), mode="overwrite")
    if index is not None:
        from lancedb.index import IvfFlat

        table.create_index("vector", config=IvfFlat(distance_type=index, num_partitions=4))
    return table


def _columns(table, ids):
    rows = table.search().where(f"id IN ({', '.join(repr(i) for i in ids)})").limit(None)
    return {r["id"]: (r["text"], r["metadata"]) for r in rows.to_arrow().to_pylist()}


@pytest.mark.parametrize(
    ("index", "distance"), [(None, "l2"), ("cosine", "cosine"), ("dot", "dot")]
)
def test_lancedb_store(tmp_path, vectors, index, distance):
    table = _table(tmp_path / "db", "docs", vectors, index)
    store = LanceDBBackend(table, search_params={"nprobes": 4})  # every partition: exact
    assert store.distance == distance
    assert (store.index_name is None) == (index is None)
    assert store.count() == N_DOCS and store.name == "docs" and not store.is_remote
    assert store.list_ids() == IDS
    assert store.default_state_dir() == tmp_path / "db" / "nudge_state" / "docs"
    np.testing.assert_array_equal(store.get_vectors([IDS[9], IDS[4]]), vectors[[9, 4]])
    with pytest.raises(KeyError, match="nope"):
        store.get_vectors([IDS[0], "nope"])

    queries = _unit(np.random.default_rng(1).standard_normal((5, DIM)))
    for k in (1, 8, N_DOCS + 4):
        got_ids, got = store.nearest(queries, k)
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, N_DOCS)]
        assert got.shape == (5, k)
        assert got_ids == [[IDS[j] for j in row] for row in order]
        np.testing.assert_allclose(
            got[:, : order.shape[1]], np.take_along_axis(scores, order, 1), atol=TOL
        )
        assert np.isneginf(got[:, order.shape[1] :]).all()

    before = _columns(table, IDS[:4])
    version = table.version
    new = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
    store.set_vectors(IDS[:3], new)
    store.set_vectors(IDS[:3], new)  # idempotent
    assert table.version == version + 2  # one version per write
    np.testing.assert_array_equal(store.get_vectors(IDS[:4]), np.vstack([new, vectors[3:4]]))
    assert _columns(table, IDS[:4]) == before
    assert store.count() == N_DOCS
    # The updated rows are searched correctly before any optimize().
    got_ids, _ = store.nearest(new, 1)
    assert got_ids == [[i] for i in IDS[:3]]
    with pytest.raises(UnknownIdError, match="ghost"):
        store.set_vectors(["ghost"], new[:1])
    with pytest.raises(ValueError, match="dimensions"):
        store.set_vectors(IDS[:1], np.ones((1, DIM + 1), dtype=np.float32))
    assert store.count() == N_DOCS


def test_lancedb_writeback_and_versions(tmp_path, vectors):
    table = _table(tmp_path / "db", "docs", vectors)
    store = LanceDBBackend.from_uri(tmp_path / "db", "docs")
    before = _columns(table, IDS)
    first = table.version
    wb = WriteBack(store, store.default_state_dir(), batch_size=64)
    moved = _unit(vectors[:100] + 0.2)
    wb.apply(IDS[:100], moved)
    np.testing.assert_allclose(store.get_vectors(IDS[:100]), moved, atol=1e-7)
    assert wb.restore() == 100
    np.testing.assert_array_equal(store.get_vectors(IDS), vectors)
    assert _columns(store.table, IDS) == before
    # Restore is a new version; the tuned vectors are still in the versions in between.
    # (read through the table: the backend always reads the latest version)
    table.checkout(first + 2)  # after the apply's two batches
    old = table.to_arrow()
    rows = {i: r for r, i in enumerate(old["id"].to_pylist())}
    tuned = np.stack(old["vector"].to_numpy(zero_copy_only=False))[[rows[i] for i in IDS[:100]]]
    assert not np.array_equal(tuned, vectors[:100])
    table.checkout_latest()
    np.testing.assert_array_equal(store.get_vectors(IDS[:100]), vectors[:100])


def test_lancedb_integer_ids_and_refusals(tmp_path, vectors):
    db = lancedb.connect(tmp_path / "db")
    data = pa.table(
        {
            "key": pa.array(range(10), type=pa.int64()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors[:10].ravel()), DIM),
        }
    )
    table = db.create_table("ints", data=data)
    store = LanceDBBackend(table, vector_column="emb", id_column="key")
    assert store.list_ids() == [str(i) for i in range(10)]
    store.set_vectors(["3"], vectors[[5]])
    np.testing.assert_array_equal(store.get_vectors(["3", "4"]), vectors[[5, 4]])
    with pytest.raises(KeyError):
        store.get_vectors(["three"])
    with pytest.raises(ValueError, match="no column 'vector'"):
        LanceDBBackend(table)
    with pytest.raises(ValueError, match="float vector columns"):
        LanceDBBackend(table, vector_column="key", id_column="key")
    with pytest.raises(ValueError, match="distance must be one of"):
        LanceDBBackend(table, vector_column="emb", id_column="key", distance="hamming")
    assert LanceDBBackend(table, vector_column="emb", id_column="key", distance="dot").distance == (
        "dot"
    )


def _answer_ids(split, doc_ids) -> list[list[str]]:
    rel = split.relevance
    return [
        [doc_ids[j] for j in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]]
        for q in range(split.n_queries)
    ]


@pytest.mark.slow  # about 6 s
def test_lancedb_store_mode_matches_read_mode(nfcorpus_dir, tmp_path):
    """Flat search is exact, so ``passive="store"`` must choose the read mode's gamma."""
    from nudge_rag._data import load_embedded

    d = load_embedded(nfcorpus_dir)
    doc_ids = list(d.doc_ids)
    emb = np.asarray(d.doc_embeddings, dtype=np.float32)
    train, dev = _answer_ids(d.train, doc_ids), _answer_ids(d.dev, doc_ids)
    data = pa.table(
        {
            "id": doc_ids,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]),
        }
    )
    table = lancedb.connect(tmp_path / "db").create_table("nfcorpus", data=data)
    store = LanceDBBackend(table)
    assert store.distance == "l2"  # unit-norm MiniLM vectors: l2 ranks like cosine
    results = {}
    for mode in ("read", "store"):
        wb = WriteBack(store)
        results[mode] = tune_store(
            wb, NudgeN(), d.train.query_embeddings, train, d.dev.query_embeddings, dev,
            passive=mode,
        )  # fmt: skip
        wb.restore()
    read, side = results["read"], results["store"]
    assert read.n_docs == len(doc_ids) and side.n_docs < len(doc_ids)
    assert side.gamma == read.gamma
    assert side.val_score == pytest.approx(read.val_score, abs=1e-4)
    assert sorted(side.changed_ids) == sorted(read.changed_ids)
    np.testing.assert_array_equal(store.get_vectors(doc_ids[:50]), emb[:50])
