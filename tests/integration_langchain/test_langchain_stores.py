"""Per-store adapters: read/write by id, distance detection, originals, HTTP Chroma, fallback."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import logging
import uuid

import numpy as np
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, toy_vectors
from langchain_nudge import (
    NudgeRetriever,
    ReAddStore,
    store_for,
)
from numpy.testing import assert_allclose

from nudge_rag.backends import ChromaBackend, InMemoryVectorStoreBackend, QdrantBackend

TEXTS = [f"passage {i}" for i in range(10)]
IDS = [f"doc-{i}" for i in range(10)]
QUESTIONS = [f"question about passage {i}?" for i in range(10)]
DIM = 8


def _vectors(seed: int = 0) -> dict[str, np.ndarray]:
    """Unit vectors; each question lies close to its passage."""
    vecs = toy_vectors(TEXTS, dim=DIM, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for text, question in zip(TEXTS, QUESTIONS, strict=True):
        q = vecs[text] + 0.8 * rng.normal(size=DIM)
        vecs[question] = (q / np.linalg.norm(q)).astype(np.float32)
    return vecs


PAIRS = [(QUESTIONS[i], IDS[i]) for i in range(6)]


def _chroma(tmp_path=None, space: str | None = "cosine", client=None, name="nudge-test", **kw):
    pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    from langchain_chroma import Chroma

    meta = {"hnsw:space": space} if space else None
    store = Chroma(
        collection_name=name,
        embedding_function=LookupEmbeddings(_vectors(), default=np.ones(DIM) / DIM**0.5),
        persist_directory=None if tmp_path is None else str(tmp_path),
        client=client,
        collection_metadata=meta,
        **kw,
    )
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(10)])
    return store


def _qdrant(location=":memory:", distance="COSINE", vector_name=""):
    pytest.importorskip("langchain_qdrant", reason="pip install 'nudge-rag[qdrant]'")
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location) if location == ":memory:" else QdrantClient(path=location)
    params = models.VectorParams(size=DIM, distance=getattr(models.Distance, distance))
    client.create_collection(
        "nudge", vectors_config={vector_name: params} if vector_name else params
    )
    store = QdrantVectorStore(
        client,
        "nudge",
        embedding=LookupEmbeddings(_vectors(), default=np.ones(DIM) / DIM**0.5),
        distance=getattr(models.Distance, distance),
        vector_name=vector_name,
    )
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in IDS]
    store.add_texts(TEXTS, ids=ids, metadatas=[{"i": i} for i in range(10)])
    return store, ids


def _roundtrip(adapter, ids):
    before = adapter.get_vectors(ids)
    assert before.shape == (len(ids), DIM) and before.dtype == np.float32
    # order follows the ids asked
    assert_allclose(adapter.get_vectors(ids[::-1]), before[::-1])
    new = np.eye(DIM, dtype=np.float32)[: len(ids[:3])]
    adapter.set_vectors(ids[:3], new)
    adapter.set_vectors(ids[:3], new)  # idempotent
    assert_allclose(adapter.get_vectors(ids[:3]), new, atol=1e-6)
    assert_allclose(adapter.get_vectors(ids[3:]), before[3:])
    with pytest.raises(KeyError, match="'nope'"):  # unknown, or not even a valid point id
        adapter.get_vectors([ids[0], "nope"])


def test_in_memory_adapter():
    store = InMemoryVectorStore(LookupEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(10)])
    adapter = store_for(store)
    assert isinstance(adapter, InMemoryVectorStoreBackend) and adapter.distance == "cosine"
    assert adapter.list_ids() == IDS
    _roundtrip(adapter, IDS)
    doc = store.get_by_ids(["doc-1"])[0]
    assert doc.page_content == "passage 1" and doc.metadata == {"i": 1}
    assert isinstance(store.store["doc-1"]["vector"], list)


@pytest.mark.parametrize(
    ("kwargs", "distance"),
    [
        ({"space": "cosine"}, "cosine"),
        ({"space": "ip"}, "dot"),
        ({"space": None}, "l2"),
        ({"space": None, "collection_configuration": {"hnsw": {"space": "ip"}}}, "dot"),
    ],
)
def test_chroma_distance(kwargs, distance):
    adapter = store_for(_chroma(name=f"c-{uuid.uuid4().hex[:8]}", **kwargs))
    assert isinstance(adapter, ChromaBackend)
    assert adapter.distance == distance


def test_chroma_persistent_roundtrip_and_state_dir(tmp_path):
    store = _chroma(tmp_path / "db")
    adapter = store_for(store)
    assert sorted(adapter.list_ids()) == sorted(IDS)
    _roundtrip(adapter, IDS)
    assert store.get_by_ids(["doc-0"])[0].metadata == {"i": 0}
    assert adapter.default_state_dir() == tmp_path / "db" / "nudge_state" / "nudge-test"


def test_chroma_originals_survive_a_new_process(tmp_path):
    store = _chroma(tmp_path / "db")
    before = store_for(store).get_vectors(IDS)
    retriever = NudgeRetriever(vectorstore=store, solver_params={"gamma": 0.5})
    retriever.fit(PAIRS)
    state = tmp_path / "db" / "nudge_state" / "nudge-test" / "originals.npz"
    assert state.exists()
    assert not np.allclose(store_for(store).get_vectors(IDS), before)
    # A fresh retriever (as after a restart) finds the originals next to the store.
    fresh = NudgeRetriever(vectorstore=store)
    assert fresh.restore() == len(retriever.tune_result.changed_ids)
    assert_allclose(store_for(store).get_vectors(IDS), before, atol=1e-6)


def test_chroma_http_server(chroma_server, tmp_path):
    import chromadb

    host, port = chroma_server.host, chroma_server.port
    client = chromadb.HttpClient(host=host, port=port)
    store = _chroma(client=client, name="http-test")
    adapter = store_for(store)
    assert adapter.distance == "cosine"
    assert adapter.default_state_dir() is None
    _roundtrip(adapter, IDS)
    adapter.set_vectors(IDS[:3], np.array([_vectors()[t] for t in TEXTS[:3]]))
    before = adapter.get_vectors(IDS)
    with pytest.raises(ValueError, match="lives on a server: pass state_dir"):
        NudgeRetriever(vectorstore=store, k=1).fit(PAIRS)
    assert_allclose(adapter.get_vectors(IDS), before, atol=0)  # nothing written
    retriever = NudgeRetriever(
        vectorstore=store, k=1, solver_params={"gamma": 0.5}, state_dir=tmp_path / "state"
    )
    assert retriever.invoke(QUESTIONS[0])[0].id in IDS
    retriever.fit(PAIRS)
    assert retriever.tune_result.changed_ids
    n_changed = len(retriever.tune_result.changed_ids)
    assert retriever.restore() == n_changed
    assert_allclose(adapter.get_vectors(IDS), before, atol=1e-6)


def test_qdrant_adapter_unnamed_and_named():
    store, ids = _qdrant()
    adapter = store_for(store)
    assert isinstance(adapter, QdrantBackend) and adapter.distance == "cosine"
    assert sorted(adapter.list_ids()) == sorted(ids)
    _roundtrip(adapter, ids)
    named, named_ids = _qdrant(distance="DOT", vector_name="dense")
    adapter = store_for(named)
    assert adapter.distance == "dot"
    _roundtrip(adapter, named_ids)
    euclid, _ = _qdrant(distance="EUCLID")
    assert store_for(euclid).distance == "l2"


def test_qdrant_cosine_roundtrips_nudge_n_and_refuses_nudge_m():
    store, ids = _qdrant()
    adapter = store_for(store)
    original = adapter.get_vectors(ids)
    retriever = NudgeRetriever(vectorstore=store, solver_params={"gamma": 0.5})
    pairs = [(q, ids[IDS.index(d)]) for q, d in PAIRS]
    retriever.fit(pairs)
    result = retriever.tune_result
    assert result.changed_ids
    # Qdrant normalizes under COSINE; NUDGE-N output is unit-norm, so it reads back as written.
    rows = [ids.index(i) for i in result.changed_ids]
    assert_allclose(
        adapter.get_vectors(result.changed_ids), result.solver.changed_embeddings_, atol=1e-6
    )
    assert_allclose(np.linalg.norm(adapter.get_vectors(ids), axis=1), 1.0, atol=1e-5)
    assert rows
    retriever.restore()
    assert_allclose(adapter.get_vectors(ids), original, atol=1e-6)

    m = NudgeRetriever(vectorstore=store, variant="m")
    with pytest.raises(ValueError, match="Distance.DOT"):
        m.fit(pairs)
    assert_allclose(adapter.get_vectors(ids), original, atol=1e-6)


def test_nudge_m_on_dot_stores():
    store, ids = _qdrant(distance="DOT", vector_name="dense")
    retriever = NudgeRetriever(vectorstore=store, variant="m", k=1, solver_params={"gamma": 5.0})
    retriever.fit([(q, ids[IDS.index(d)]) for q, d in PAIRS])
    assert retriever.invoke(QUESTIONS[0])[0].id == ids[0]
    chroma = _chroma(space="ip", name="ip-test")
    retriever = NudgeRetriever(vectorstore=chroma, variant="m", k=1, solver_params={"gamma": 5.0})
    retriever.fit(PAIRS)
    assert retriever.invoke(QUESTIONS[0])[0].id == "doc-0"


def test_qdrant_local_state_dir(tmp_path):
    store, ids = _qdrant(location=str(tmp_path / "q"))
    retriever = NudgeRetriever(vectorstore=store, solver_params={"gamma": 0.5})
    retriever.fit([(q, ids[IDS.index(d)]) for q, d in PAIRS])
    assert (tmp_path / "q" / "nudge_state" / "nudge" / "originals.npz").exists()
    retriever.restore()
    store.client.close()


def test_explicit_state_dir_for_in_memory_store(tmp_path):
    store = InMemoryVectorStore(LookupEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS)
    retriever = NudgeRetriever(
        vectorstore=store, state_dir=tmp_path / "s", solver_params={"gamma": 0.5}
    )
    retriever.fit(PAIRS)
    assert (tmp_path / "s" / "originals.npz").exists()


def test_in_memory_originals_say_the_langchain_fix_without_a_warning(caplog):
    store = InMemoryVectorStore(LookupEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS)
    with caplog.at_level(logging.INFO, logger="nudge_rag"):
        NudgeRetriever(vectorstore=store, solver_params={"gamma": 0.5}).fit(PAIRS)
    assert "kept in memory only" in caplog.text
    assert "NudgeRetriever(state_dir=<folder>)" in caplog.text
    assert "persist_dir" not in caplog.text  # NudgeRetriever takes no persist_dir
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the happy path


def test_refit_starts_from_originals():
    store = InMemoryVectorStore(LookupEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS)
    original = store_for(store).get_vectors(IDS)
    retriever = NudgeRetriever(vectorstore=store, solver_params={"gamma": 0.5})
    once = store_for(store).get_vectors(IDS) if retriever.fit(PAIRS) else None
    retriever.fit(PAIRS)
    assert_allclose(store_for(store).get_vectors(IDS), once, atol=1e-6)
    retriever.fit(PAIRS[:1])  # rows moved before but not now go back
    moved = set(retriever.tune_result.changed_ids)
    untouched = [k for k, i in enumerate(IDS) if i not in moved]
    assert_allclose(store_for(store).get_vectors(IDS)[untouched], original[untouched], atol=1e-6)


def test_readd_fallback_warns_and_writes(caplog):
    store = InMemoryVectorStore(LookupEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(10)])
    reader = InMemoryVectorStoreBackend(store)
    fallback = ReAddStore(store, get_vectors=reader.get_vectors, ids=IDS, distance="cosine")
    retriever = NudgeRetriever(
        vectorstore=store, embedding_store=fallback, solver_params={"gamma": 0.5}
    )
    with caplog.at_level(logging.WARNING):
        retriever.fit(PAIRS)
    assert "delete-then-add" in caplog.text
    changed = retriever.tune_result.changed_ids
    assert_allclose(
        reader.get_vectors(changed), retriever.tune_result.solver.changed_embeddings_, atol=1e-6
    )
    assert store.get_by_ids(["doc-1"])[0].metadata == {"i": 1}
    assert store.embeddings.__class__.__name__ == "LookupEmbeddings"  # shim removed
    retriever.restore()


def test_documents_from_qdrant_carry_ids():
    store, ids = _qdrant()
    retriever = NudgeRetriever(vectorstore=store, k=2)
    assert {d.id for d in retriever.invoke(QUESTIONS[0])} <= set(ids)
    assert [d.id for d in retriever.stored_documents()][:1][0] in ids
    assert isinstance(retriever.stored_documents()[0], Document)
