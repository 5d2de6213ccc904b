"""The Milvus backend against a real Milvus Lite file (milvus-lite, one ``.db`` per module).

For COSINE, IP and L2 indexes: the distance read from the index, ids and count, vectors in the
order asked, unknown ids, writes that keep text, scalar and dynamic fields (whole-row upsert
and ``partial_update=True``), ``nearest`` against a numpy brute force (FLAT is exact), the
state folder next to the ``.db``. Then the refusals (no index, two vector fields, a sparse
vector field, manual partitions, a server uri has no default folder), a WriteBack round trip,
and ``tune_store`` on nfcorpus: store-side validation picks the read mode's gamma.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pymilvus", reason="pip install 'nudge-rag[milvus]'")

import numpy as np

pymilvus = pytest.importorskip("pymilvus", reason="pip install 'nudge-rag[milvus]'")
pytest.importorskip("milvus_lite", reason="pip install 'nudge-rag[milvus]'")

from pymilvus import DataType, MilvusClient  # noqa: E402

from nudge_rag import NudgeN  # noqa: E402
from nudge_rag._tune import tune_store  # noqa: E402
from nudge_rag._writeback import WriteBack  # noqa: E402
from nudge_rag.backends import MilvusBackend  # noqa: E402

N_DOCS, DIM = 60, 16
TOL = 1e-5


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("milvus") / "store.db"
    client = MilvusClient(uri=str(path), db_name="default")
    yield client, path
    client.close()


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((N_DOCS, DIM)))


IDS = [f"doc-{i:03d}" for i in range(N_DOCS)]


def _collection(client, name, vectors, metric="COSINE", *, int_ids=False, index=True, extra=None):
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    if int_ids:
        schema.add_field("pk", DataType.INT64, is_primary=True)
    else:
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=256)
    schema.add_field("year", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    for field, kind, kw in extra or []:
        schema.add_field(field, kind, **kw)
    params = None
    if index:
        params = client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type=metric)
    client.create_collection(name, schema=schema, index_params=params)
    if index:
        rows = [
            {
                "pk": i if int_ids else IDS[i],
                "text": f"text {i}",
                "year": 2000 + i,
                "vector": vectors[i],
                "tag": f"dyn-{i}",  # a dynamic field
            }
            for i in range(len(vectors))
        ]
        client.insert(name, rows)
        client.flush(name)
    return name


def _fields(client, name, ids):
    rows = client.query(name, ids=ids, output_fields=["text", "year", "tag"])
    return {str(r["pk"]): (r["text"], r["year"], r["tag"]) for r in rows}


@pytest.mark.parametrize(
    ("metric", "distance"), [("COSINE", "cosine"), ("IP", "dot"), ("L2", "l2")]
)
def test_milvus_store(db, vectors, metric, distance):
    client, path = db
    name = _collection(client, f"c_{metric.lower()}", vectors, metric)
    store = MilvusBackend(client, name)
    assert store.distance == distance
    assert (store.primary_field, store.vector_field, store.dim) == ("pk", "vector", DIM)
    assert store.count() == N_DOCS
    assert store.list_ids() == IDS  # primary-key order
    assert store.name == name and not store.is_remote
    assert store.default_state_dir() == path.resolve().parent / "nudge_state" / name
    np.testing.assert_array_equal(store.get_vectors([IDS[5], IDS[2]]), vectors[[5, 2]])
    assert store.get_vectors([]).shape == (0, DIM)
    with pytest.raises(KeyError, match="nope"):
        store.get_vectors([IDS[0], "nope"])

    # nearest against brute force; k beyond the collection pads with -inf
    queries = _unit(np.random.default_rng(1).standard_normal((5, DIM)))
    for k in (1, 7, N_DOCS + 5):
        got_ids, got = store.nearest(queries, k)
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, N_DOCS)]
        assert got.shape == (5, k)
        assert got_ids == [[IDS[j] for j in row] for row in order]
        np.testing.assert_allclose(
            got[:, : order.shape[1]], np.take_along_axis(scores, order, 1), atol=TOL
        )
        assert np.isneginf(got[:, order.shape[1] :]).all()

    before = _fields(client, name, IDS[:4])
    new = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
    store.set_vectors(IDS[:3], new)
    store.set_vectors(IDS[:3], new)  # idempotent
    np.testing.assert_array_equal(store.get_vectors(IDS[:4]), np.vstack([new, vectors[3:4]]))
    assert _fields(client, name, IDS[:4]) == before  # text, scalar and dynamic fields kept
    assert store.count() == N_DOCS
    with pytest.raises(KeyError, match="ghost"):
        store.set_vectors(["ghost"], new[:1])
    with pytest.raises(ValueError, match="dimensions"):
        store.set_vectors(IDS[:1], np.ones((1, DIM + 1), dtype=np.float32))
    assert store.count() == N_DOCS


def test_milvus_partial_update_and_int_ids(db, vectors):
    client, _ = db
    name = _collection(client, "c_int", vectors, int_ids=True)
    store = MilvusBackend(client, name, partial_update=True)
    ids = [str(i) for i in range(N_DOCS)]
    assert store.list_ids() == ids
    before = _fields(client, name, [0, 1])
    store.set_vectors(["1", "0"], vectors[[7, 8]])
    np.testing.assert_array_equal(store.get_vectors(["0", "1"]), vectors[[8, 7]])
    assert _fields(client, name, [0, 1]) == before  # milvus-lite 3.2.2 keeps them
    with pytest.raises(KeyError, match="not-a-number"):
        store.get_vectors(["not-a-number"])


def test_milvus_refusals(db, vectors):
    client, _ = db
    with pytest.raises(ValueError, match="does not exist"):
        MilvusBackend(client, "missing")
    name = _collection(client, "c_noindex", vectors, index=False)
    with pytest.raises(ValueError, match="has no index"):
        MilvusBackend(client, name)
    two = [("other", DataType.FLOAT_VECTOR, {"dim": 4})]
    name = _collection(client, "c_two", vectors[:0], extra=two, index=False)
    with pytest.raises(ValueError, match="2 FLOAT_VECTOR fields"):
        MilvusBackend(client, name)
    sparse = [("bits", DataType.SPARSE_FLOAT_VECTOR, {})]
    name = _collection(client, "c_sparse", vectors[:0], extra=sparse, index=False)
    with pytest.raises(ValueError, match="SPARSE_FLOAT_VECTOR"):
        MilvusBackend(client, name, vector_field="bits")
    with pytest.raises(ValueError, match="no vector field 'vec'"):
        MilvusBackend(client, name, vector_field="vec")
    name = _collection(client, "c_parts", vectors)
    client.create_partition(name, "archive")
    with pytest.raises(ValueError, match="partition key"):
        MilvusBackend(client, name)
    # A server uri: remote, no default folder (the client here is the Lite one).
    name = _collection(client, "c_remote", vectors[:3])
    remote = MilvusBackend(client, name, uri="http://milvus.example:19530")
    assert remote.is_remote and remote.default_state_dir() is None


def test_milvus_writeback_keeps_fields(db, vectors, tmp_path):
    client, _ = db
    name = _collection(client, "c_wb", vectors)
    store = MilvusBackend(client, name)
    before = _fields(client, name, IDS)
    wb = WriteBack(store, tmp_path / "state", batch_size=7)
    moved = _unit(vectors[:20] + 0.3)
    wb.apply(IDS[:20], moved)
    np.testing.assert_allclose(store.get_vectors(IDS[:20]), moved, atol=1e-7)
    assert _fields(client, name, IDS) == before
    assert wb.restore() == 20
    np.testing.assert_array_equal(store.get_vectors(IDS), vectors)
    assert _fields(client, name, IDS) == before
    assert store.count() == N_DOCS


def test_milvus_from_uri(tmp_path, vectors):
    path = tmp_path / "cli.db"
    client = MilvusClient(uri=str(path), db_name="default")
    _collection(client, "docs", vectors[:5])
    client.release_collection("docs")  # a fresh process finds it released
    client.close()
    store = MilvusBackend.from_uri(path, "docs")
    assert store.count() == 5 and store.distance == "cosine"
    assert store.default_state_dir() == tmp_path.resolve() / "nudge_state" / "docs"
    store.client.close()


def _answer_ids(split, doc_ids) -> list[list[str]]:
    rel = split.relevance
    return [
        [doc_ids[j] for j in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]]
        for q in range(split.n_queries)
    ]


@pytest.mark.slow  # about 50 s
def test_milvus_store_mode_matches_read_mode(nfcorpus_dir, db):
    """FLAT search is exact, so ``passive="store"`` must choose the read mode's gamma."""
    from nudge_rag._data import load_embedded

    client, _ = db
    d = load_embedded(nfcorpus_dir)
    doc_ids = list(d.doc_ids)
    emb = np.asarray(d.doc_embeddings, dtype=np.float32)
    train, dev = _answer_ids(d.train, doc_ids), _answer_ids(d.dev, doc_ids)
    name = "nfcorpus"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=emb.shape[1])
    params = client.prepare_index_params()
    params.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=params)
    client.insert(name, [{"pk": i, "vector": v} for i, v in zip(doc_ids, emb)])
    client.flush(name)
    store = MilvusBackend(client, name)
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


def test_list_ids_pages_through_more_than_one_query_window(db):
    """More keys than one 16,384-key page: every id once, in primary-key order, int keys too."""
    client, path = db
    n = 20_000
    many = _unit(np.random.default_rng(5).standard_normal((n, DIM)))
    name = "many"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=params)
    order = np.random.default_rng(6).permutation(n)  # inserted out of order
    for s in range(0, n, 5000):
        client.insert(name, [{"pk": int(k), "vector": many[k]} for k in order[s : s + 5000]])
    client.flush(name)
    store = MilvusBackend(client, name)
    ids = store.list_ids()
    assert ids == [str(k) for k in range(n)]
    np.testing.assert_allclose(store.get_vectors(ids[-3:]), many[-3:], atol=TOL)
    client.drop_collection(name)
