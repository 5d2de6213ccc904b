"""The shared vector-store backends against real (embedded / local) clients.

* :class:`ChromaBackend` over an embedded Chroma collection (spaces cosine, l2, ip);
* :class:`QdrantBackend` over a local Qdrant collection (``":memory:"``; COSINE,
  DOT, EUCLID; an unnamed and a named dense vector).

For each: the distance read from the collection, ``get_vectors`` order and unknown ids,
``set_vectors`` in place (ids, count, documents / payloads kept), ``nearest`` against a numpy
brute force (on 120 points HNSW is exact), ``count``. Then an end-to-end ``tune_store`` on
nfcorpus in a Chroma cosine collection, ``passive="store"`` against ``passive="read"``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("qdrant_client", reason="pip install 'nudge-rag[qdrant]'")

import uuid

import numpy as np

from nudge_rag import NudgeN
from nudge_rag._tune import tune_store
from nudge_rag._writeback import WriteBack
from nudge_rag.backends import ChromaBackend, QdrantBackend

N_DOCS, DIM = 120, 16
TOL = 1e-5


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((N_DOCS, DIM)))


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return _unit(np.random.default_rng(1).standard_normal((7, DIM)))


def _brute_force(docs: np.ndarray, ids: list[str], queries: np.ndarray, k: int):
    scores = queries @ docs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def _check_nearest(store, docs: np.ndarray, ids: list[str], queries: np.ndarray) -> None:
    for k in (1, 5, N_DOCS + 10):  # k larger than the collection: every id, then -inf
        got_ids, got = store.nearest(queries, k)
        want_ids, want = _brute_force(docs, ids, queries, min(k, N_DOCS))
        assert got.shape == (queries.shape[0], k)
        for row_got, row_want, s_got, s_want in zip(got_ids, want_ids, got, want):
            # ties are measure-zero for random data; compare ids where the scores differ
            assert len(row_got) == min(k, N_DOCS)
            np.testing.assert_allclose(s_got[: len(row_got)], s_want, atol=TOL)
            assert row_got == row_want
            assert np.isneginf(s_got[len(row_got) :]).all()
    empty_ids, empty = store.nearest(np.zeros((0, DIM), dtype=np.float32), 3)
    assert list(empty_ids) == [] and empty.shape == (0, 3)


# ---------------------------------------------------------------------------- Chroma
chromadb = pytest.importorskip("chromadb", reason="pip install 'nudge-rag[chroma]'")


def _chroma_collection(space: str, how: str, vectors: np.ndarray, name: str):
    client = chromadb.EphemeralClient()
    name = f"{name}-{uuid.uuid4().hex[:8]}"  # ephemeral clients share one process-wide system
    if how == "configuration":
        col = client.create_collection(
            name, configuration={"hnsw": {"space": space, "ef_search": 400}}
        )
    elif how == "metadata":
        col = client.create_collection(name, metadata={"hnsw:space": space})
    else:  # Chroma's default space
        col = client.create_collection(name)
    ids = [f"d{i}" for i in range(vectors.shape[0])]
    col.add(
        ids=ids,
        embeddings=vectors,
        documents=[f"text {i}" for i in ids],
        metadatas=[{"n": i} for i in range(len(ids))],
    )
    return col, ids


CHROMA_CASES = [
    ("cosine", "configuration", "cosine"),
    ("cosine", "metadata", "cosine"),
    ("l2", "configuration", "l2"),
    ("l2", "metadata", "l2"),
    ("l2", "default", "l2"),
    ("ip", "configuration", "dot"),
    ("ip", "metadata", "dot"),
]


@pytest.mark.parametrize(("space", "how", "distance"), CHROMA_CASES)
def test_chroma_store(space, how, distance, vectors, queries):
    col, ids = _chroma_collection(space, how, vectors, f"t-{space}-{how}")
    store = ChromaBackend(col, page_size=50)  # several pages in list_ids
    assert store.distance == distance
    assert store.count() == N_DOCS
    assert sorted(store.list_ids()) == sorted(ids)

    # get_vectors: the order asked, not storage order
    ask = ["d7", "d3", "d100", "d0"]
    np.testing.assert_allclose(store.get_vectors(ask), vectors[[7, 3, 100, 0]], atol=1e-7)
    assert store.get_vectors([]).shape[0] == 0
    with pytest.raises(KeyError, match="nope"):
        store.get_vectors(["d1", "nope"])

    _check_nearest(store, vectors, ids, queries)

    # set_vectors in place: ids, count, documents and metadata stay
    new = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
    store.set_vectors(["d5", "d9", "d11"], new)
    assert store.count() == N_DOCS
    assert sorted(store.list_ids()) == sorted(ids)
    np.testing.assert_allclose(store.get_vectors(["d9", "d5", "d11"]), new[[1, 0, 2]], atol=1e-7)
    got = col.get(ids=["d5", "d9"], include=["documents", "metadatas"])
    assert dict(zip(got["ids"], got["documents"])) == {"d5": "text d5", "d9": "text d9"}
    assert {i: m["n"] for i, m in zip(got["ids"], got["metadatas"])} == {"d5": 5, "d9": 9}
    moved = vectors.copy()
    moved[[5, 9, 11]] = new
    _check_nearest(store, moved, ids, queries)  # the index sees the update
    with pytest.raises(ValueError, match="same length"):
        store.set_vectors(["d1", "d2"], new)


def test_chroma_rejects_unknown_space():
    class Fake:
        name = "fake"
        configuration = {"hnsw": {"space": "hamming"}}
        metadata = None

    with pytest.raises(ValueError, match="hamming"):
        ChromaBackend(Fake())


# ---------------------------------------------------------------------------- Qdrant
qdrant_client = pytest.importorskip("qdrant_client", reason="pip install 'nudge-rag[qdrant]'")
from qdrant_client import QdrantClient, models  # noqa: E402

QDRANT_CASES = [
    (models.Distance.COSINE, "cosine"),
    (models.Distance.DOT, "dot"),
    (models.Distance.EUCLID, "l2"),
]


def _qdrant_collection(distance, vector_name: str, vectors: np.ndarray, uuid_ids: bool):
    client = QdrantClient(":memory:")
    params = models.VectorParams(size=vectors.shape[1], distance=distance)
    config = {vector_name: params} if vector_name else params
    client.create_collection("docs", vectors_config=config)
    if uuid_ids:
        ids = [str(uuid.UUID(int=i + 1)) for i in range(vectors.shape[0])]
    else:
        ids = [str(i) for i in range(vectors.shape[0])]
    points = [
        models.PointStruct(
            id=int(i) if i.isdigit() else i,
            vector={vector_name: row} if vector_name else row,
            payload={"text": f"text {i}"},
        )
        for i, row in zip(ids, vectors.tolist())
    ]
    client.upsert("docs", points=points, wait=True)
    return client, ids


@pytest.mark.parametrize(("distance", "name"), QDRANT_CASES)
@pytest.mark.parametrize("vector_name", ["", "dense"])
def test_qdrant_store(distance, name, vector_name, vectors, queries):
    uuid_ids = vector_name == "dense"  # one id kind per vector kind keeps the grid small
    client, ids = _qdrant_collection(distance, vector_name, vectors, uuid_ids)
    store = QdrantBackend(client, "docs", vector_name, page_size=50)
    assert store.distance == name
    assert store.count() == N_DOCS
    assert sorted(store.list_ids()) == sorted(ids)

    ask = [ids[7], ids[3], ids[100], ids[0]]
    np.testing.assert_allclose(store.get_vectors(ask), vectors[[7, 3, 100, 0]], atol=1e-6)
    if uuid_ids:  # any UUID spelling is matched in canonical form
        upper = [i.upper() for i in ask]
        np.testing.assert_allclose(store.get_vectors(upper), vectors[[7, 3, 100, 0]], atol=1e-6)
    missing = str(uuid.UUID(int=10_000)) if uuid_ids else "10000"
    with pytest.raises(KeyError, match=missing):
        store.get_vectors([ids[1], missing])
    with pytest.raises(KeyError, match="not-an-id"):
        store.get_vectors(["not-an-id"])

    _check_nearest(store, vectors, ids, queries)

    new = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
    store.set_vectors([ids[5], ids[9], ids[11]], new)
    assert store.count() == N_DOCS
    assert sorted(store.list_ids()) == sorted(ids)
    np.testing.assert_allclose(
        store.get_vectors([ids[9], ids[5], ids[11]]), new[[1, 0, 2]], atol=1e-6
    )
    records = client.retrieve(
        "docs", ids=[int(ids[5]) if ids[5].isdigit() else ids[5]], with_payload=True
    )
    assert records[0].payload == {"text": f"text {ids[5]}"}
    moved = vectors.copy()
    moved[[5, 9, 11]] = new
    _check_nearest(store, moved, ids, queries)


def test_qdrant_vector_name_mismatch(vectors):
    client, _ = _qdrant_collection(models.Distance.COSINE, "dense", vectors[:5], False)
    with pytest.raises(ValueError, match="no dense vector named"):
        QdrantBackend(client, "docs", "other")
    client, _ = _qdrant_collection(models.Distance.COSINE, "", vectors[:5], False)
    with pytest.raises(ValueError, match="unnamed"):
        QdrantBackend(client, "docs", "dense")


# ------------------------------------------------------------- end to end on nfcorpus
class _CountingStore(ChromaBackend):
    """Counts the vectors read through ``get_vectors``."""

    vectors_read = 0

    def get_vectors(self, ids):
        ids = list(ids)
        self.vectors_read += len(ids)
        return super().get_vectors(ids)


def _answer_ids(split, doc_ids) -> list[list[str]]:
    rel = split.relevance
    return [
        [doc_ids[j] for j in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]]
        for q in range(split.n_queries)
    ]


@pytest.mark.slow  # both modes on nfcorpus: about 22 s
def test_tune_store_modes_on_nfcorpus(nfcorpus_dir, tmp_path):
    from nudge_rag._data import load_embedded

    d = load_embedded(nfcorpus_dir)
    doc_ids = list(d.doc_ids)
    emb = np.asarray(d.doc_embeddings, dtype=np.float32)
    train_ids, dev_ids = _answer_ids(d.train, doc_ids), _answer_ids(d.dev, doc_ids)
    results = {}
    for mode in ("read", "store"):
        client = chromadb.PersistentClient(path=str(tmp_path / mode))
        col = client.create_collection(
            "nfcorpus", configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
        )
        for s in range(0, len(doc_ids), 5000):
            col.add(ids=doc_ids[s : s + 5000], embeddings=emb[s : s + 5000])
        store = _CountingStore(col)
        res = tune_store(
            WriteBack(store),
            NudgeN(),
            d.train.query_embeddings,
            train_ids,
            d.dev.query_embeddings,
            dev_ids,
            passive=mode,
        )
        results[mode] = (res, store.vectors_read - len(res.changed_ids))
    read, store_side = results["read"][0], results["store"][0]
    n_read, n_store = results["read"][1], results["store"][1]
    print(
        f"\nnfcorpus {len(doc_ids)} docs: read mode gamma={read.gamma} val={read.val_score:.4f} "
        f"read {n_read} vectors; store mode gamma={store_side.gamma} "
        f"val={store_side.val_score:.4f} read {n_store} vectors"
    )
    assert read.n_docs == len(doc_ids) == 3633
    assert n_read == len(doc_ids)
    assert read.gamma == pytest.approx(0.4)
    assert store_side.gamma == read.gamma
    assert store_side.val_score == pytest.approx(read.val_score, abs=1e-4)
    assert store_side.n_docs == n_store < len(doc_ids)
    assert sorted(store_side.changed_ids) == sorted(read.changed_ids)
