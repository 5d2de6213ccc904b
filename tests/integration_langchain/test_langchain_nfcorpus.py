"""End to end on nfcorpus/nudge_split: fit through the retriever, measure nDCG@10, restore.

Documents go into each store with their precomputed all-MiniLM-L6-v2 vectors (a lookup
double serves them by text), so the retriever must reproduce NudgeN fitted on the arrays:
nDCG@10 on test 0.322 untuned, about 0.451 tuned, 0.322 again after restore().
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import logging
import uuid

import numpy as np
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, exact_ndcg, query_vectors, ranked_ndcg, split_pairs
from langchain_nudge import NudgeRetriever

from nudge_rag import NudgeM, NudgeN

# end to end on nfcorpus through LangChain stores: 3-45 s each; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

logger = logging.getLogger(__name__)

K = 10


@pytest.fixture(scope="module")
def corpus(nfcorpus):
    """Texts, ids, embeddings double and the reference scores from the arrays."""
    ds = nfcorpus
    vectors = dict(zip(ds.doc_texts, np.asarray(ds.doc_embeddings), strict=True))
    vectors.update(query_vectors(ds))
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    solver = NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset())
    return {
        "ds": ds,
        "embeddings": LookupEmbeddings(vectors),
        "untuned": exact_ndcg(ds, docs, K),
        "tuned": exact_ndcg(ds, solver.embeddings_, K),
    }


def _pairs(ds, split_name: str, ids: list[str]) -> list[tuple[str, str]]:
    """``split_pairs`` naming each document by its id in the store (``ids[row]``)."""
    store_id = dict(zip(ds.doc_ids, ids, strict=True))
    return [(text, store_id[doc_id]) for text, doc_id in split_pairs(ds, split_name)]


def _ndcg(retriever: NudgeRetriever, ds, ids: list[str]) -> float:
    """Test nDCG@10 of the retriever; ``ids[row]`` is the store's id of ``ds.doc_ids[row]``."""
    doc_id = dict(zip(ids, ds.doc_ids, strict=True))
    results = retriever.batch(list(ds.test.query_texts), config={"max_concurrency": 4}, k=K)
    return ranked_ndcg(ds, [[doc_id[d.id] for d in docs] for docs in results], K)


def _check_store(retriever: NudgeRetriever, corpus, ids: list[str], label: str) -> None:
    ds = corpus["ds"]
    before = _ndcg(retriever, ds, ids)
    retriever.fit(_pairs(ds, "train", ids), val_pairs=_pairs(ds, "dev", ids))
    after = _ndcg(retriever, ds, ids)
    retriever.restore()
    restored = _ndcg(retriever, ds, ids)
    logger.warning(
        "%s nDCG@10: before %.4f, after %.4f (arrays %.4f), restored %.4f",
        label,
        before,
        after,
        corpus["tuned"],
        restored,
    )
    assert before == pytest.approx(corpus["untuned"], abs=0.002)
    assert after >= 0.44
    assert after == pytest.approx(corpus["tuned"], abs=0.005)
    assert restored == pytest.approx(corpus["untuned"], abs=0.002)


def test_in_memory_store(corpus):
    ds = corpus["ds"]
    store = InMemoryVectorStore(LookupEmbeddings(corpus["embeddings"].vectors, as_arrays=True))
    store.add_texts(ds.doc_texts, ids=list(ds.doc_ids))
    retriever = NudgeRetriever(vectorstore=store, k=K)
    _check_store(retriever, corpus, list(ds.doc_ids), "InMemoryVectorStore")
    assert retriever.writeback.state_dir is None


def test_chroma_persistent(corpus, tmp_path):
    pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    from langchain_chroma import Chroma

    ds = corpus["ds"]
    store = Chroma(
        collection_name="nfcorpus",
        embedding_function=corpus["embeddings"],
        persist_directory=str(tmp_path / "chroma"),
        # ef_search above the default 100 keeps HNSW close to exact search on 3.6k docs.
        collection_configuration={"hnsw": {"space": "cosine", "ef_search": 400}},
    )
    store.add_texts(ds.doc_texts, ids=list(ds.doc_ids))
    retriever = NudgeRetriever(vectorstore=store, k=K)
    _check_store(retriever, corpus, list(ds.doc_ids), "Chroma (persistent)")
    assert retriever.writeback.state_dir == tmp_path / "chroma" / "nudge_state" / "nfcorpus"


def test_qdrant_in_memory(corpus):
    """Qdrant ``:memory:`` (on-disk local mode writes ~10x slower; see test_langchain_stores)."""
    pytest.importorskip("langchain_qdrant", reason="pip install 'nudge-rag[qdrant]'")
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    ds = corpus["ds"]
    client = QdrantClient(":memory:")
    client.create_collection(
        "nfcorpus", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    embeddings = LookupEmbeddings(corpus["embeddings"].vectors, default=np.ones(384) / 384**0.5)
    store = QdrantVectorStore(client, "nfcorpus", embedding=embeddings)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"nfcorpus/{i}")) for i in ds.doc_ids]
    store.add_texts(ds.doc_texts, ids=ids)
    retriever = NudgeRetriever(vectorstore=store, k=K)
    _check_store(retriever, corpus, ids, "Qdrant (:memory:)")
    assert retriever.writeback.state_dir is None
    client.close()


@pytest.mark.parametrize(("variant", "floor"), [("n", 0.448), ("m", 0.423)])
def test_one_set_of_pairs_cross_validates(corpus, variant, floor):
    """``fit(train pairs)`` with no validation pairs: repeated 10-fold CV, then a fit on
    every pair (issue targets: NUDGE-N >= 44.8, NUDGE-M >= 42.3).

    Measured: NUDGE-N 45.4 at the default seed (45.4, 45.4, 45.4, 45.1 at seeds 1-4);
    NUDGE-M 44.2 on the arrays. ``benchmarks/one_set_of_pairs.py --frameworks`` prints all.
    """
    ds = corpus["ds"]
    ids = list(ds.doc_ids)
    store = InMemoryVectorStore(LookupEmbeddings(corpus["embeddings"].vectors, as_arrays=True))
    store.add_texts(ds.doc_texts, ids=ids)
    if variant == "m":  # InMemoryVectorStore scores by cosine: NUDGE-M is judged on the arrays
        solver = NudgeM().fit(np.asarray(ds.doc_embeddings, dtype=np.float32), ds.train.queryset())
        after = exact_ndcg(ds, solver.embeddings_, K)
        method = solver.gamma_chosen_by_
    else:
        retriever = NudgeRetriever(vectorstore=store, k=K)
        retriever.fit(_pairs(ds, "train", ids))
        after = _ndcg(retriever, ds, ids)
        method = retriever.tune_result.method
        assert retriever.tune_result.n_folds == 10
        assert retriever.tune_result.solver.n_cv_repeats_ == 3
    logger.warning("NUDGE-%s, train pairs only: nDCG@10 %.4f (%s)", variant.upper(), after, method)
    assert method == "cv"
    assert after >= floor
