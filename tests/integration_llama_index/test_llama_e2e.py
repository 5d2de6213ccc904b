"""End to end on nfcorpus: tune a VectorStoreIndex through its store, retrieve, restore.

Documents carry their precomputed all-MiniLM-L6-v2 embeddings and the training questions in
metadata (excluded from the embedded text); the retriever is the user's unchanged
``index.as_retriever(similarity_top_k=10)``. The engine must reach what NudgeN reaches when run
directly on the arrays with the same train/dev queries, and ``restore()`` must give back the
untuned result.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import numpy as np
from llama_helpers import LookupEmbedding, query_vectors, ranked_ndcg, split_pairs
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index_nudge import DEFAULT_QUESTIONS_KEY, NudgeFinetuneEngine

from nudge_rag import NudgeN
from nudge_rag._metrics import evaluate

# end to end on nfcorpus through LlamaIndex stores: 6-70 s each; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

K = 10


def _questions_by_doc(split, n_docs: int) -> list[list[str]]:
    by_doc: list[list[str]] = [[] for _ in range(n_docs)]
    rel = split.relevance
    for q in range(split.n_queries):
        for row in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]:
            by_doc[row].append(split.query_texts[q])
    return by_doc


@pytest.fixture(scope="module")
def setup(nfcorpus):
    ds = nfcorpus
    embed = LookupEmbedding(query_vectors(ds))
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    texts = ds.doc_texts
    by_doc = _questions_by_doc(ds.train, ds.n_docs)
    nodes = []
    for k, doc_id in enumerate(ds.doc_ids):
        metadata = {}
        if by_doc[k]:
            # The extractor's format: one string of numbered lines.
            metadata[DEFAULT_QUESTIONS_KEY] = "\n".join(
                f"{j + 1}. {q}" for j, q in enumerate(by_doc[k])
            )
        nodes.append(
            TextNode(
                id_=doc_id,
                text=texts[k],
                embedding=docs[k].tolist(),
                metadata=metadata,
                excluded_embed_metadata_keys=[DEFAULT_QUESTIONS_KEY],
                excluded_llm_metadata_keys=[DEFAULT_QUESTIONS_KEY],
            )
        )
    val_pairs = split_pairs(ds, "dev")
    # Reference: NudgeN on the arrays, exact cosine top-10.
    solver = NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset())
    test = ds.test

    def exact(doc_matrix):
        normed = doc_matrix / np.linalg.norm(doc_matrix, axis=1, keepdims=True)
        scores = test.query_embeddings @ normed.T
        return evaluate(np.argsort(-scores, axis=1)[:, :K], test.relevance, K)["ndcg@10"]

    return {
        "ds": ds,
        "embed": embed,
        "nodes": nodes,
        "val_pairs": val_pairs,
        "direct": exact(solver.embeddings_),
        "untuned": exact(docs),
    }


def _ndcg(index, setup) -> float:
    ds = setup["ds"]
    retriever = index.as_retriever(similarity_top_k=K)
    ranked = [[n.node.node_id for n in retriever.retrieve(text)] for text in ds.test.query_texts]
    return ranked_ndcg(ds, ranked, K)


def _exact_ndcg(vectors: np.ndarray, setup) -> float:
    ds = setup["ds"]
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = ds.test.query_embeddings @ normed.T
    return evaluate(np.argsort(-scores, axis=1)[:, :K], ds.test.relevance, K)["ndcg@10"]


def _check(before: float, after: float, restored: float, setup, tol: float) -> None:
    print(
        f"ndcg@10 before={before:.4f} after={after:.4f} restored={restored:.4f} "
        f"direct={setup['direct']:.4f} untuned={setup['untuned']:.4f}"
    )
    assert before == pytest.approx(setup["untuned"], abs=tol)
    assert after >= 0.44
    assert after == pytest.approx(setup["direct"], abs=0.005)
    assert restored == pytest.approx(setup["untuned"], abs=tol)


def test_simple_vector_store_end_to_end(setup):
    ds = setup["ds"]
    index = VectorStoreIndex(setup["nodes"], embed_model=setup["embed"])
    embedding_dict = index.vector_store.data.embedding_dict
    stored = lambda: np.asarray([embedding_dict[i] for i in ds.doc_ids], dtype=np.float32)  # noqa: E731
    original = stored()
    # SimpleVectorStore scans every vector in Python (~60 ms a query), so the untuned and
    # restored rankings are computed from the stored vectors; the tuned one goes through
    # the retriever.
    before = _exact_ndcg(original, setup)
    engine = NudgeFinetuneEngine.from_index(index, val_pairs=setup["val_pairs"])
    assert engine.state_dir is None  # an in-memory store keeps its originals in memory
    result = engine.finetune()
    assert result.n_docs == ds.n_docs and len(result.changed_ids) > 3000
    after = _ndcg(index, setup)
    assert engine.restore() == len(result.changed_ids)
    np.testing.assert_array_equal(stored(), original)
    _check(before, after, _exact_ndcg(stored(), setup), setup, tol=0.002)


def test_chroma_persistent_end_to_end(setup, tmp_path):
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    # Cosine space; a wider HNSW search keeps the approximate top-10 close to exact.
    collection = client.create_collection(
        "nfcorpus", configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
    )
    store = ChromaVectorStore(chroma_collection=collection)
    index = VectorStoreIndex(
        setup["nodes"],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=setup["embed"],
    )
    before = _ndcg(index, setup)
    engine = NudgeFinetuneEngine.from_index(index, val_pairs=setup["val_pairs"])
    engine.finetune()
    after = _ndcg(index, setup)
    engine.restore()
    restored = _ndcg(index, setup)
    vectors = engine.store.get_vectors(setup["ds"].doc_ids)
    np.testing.assert_allclose(vectors, setup["ds"].doc_embeddings, atol=1e-6)
    # HNSW is approximate; ef_search=400 keeps it within the same tolerance as exact search.
    _check(before, after, restored, setup, tol=0.002)
    # Originals lived next to the Chroma data; restore() forgot them.
    state = tmp_path / "chroma" / "nudge_state" / "nfcorpus"
    assert state.is_dir()
    assert not (state / "originals.npz").exists()


def test_questions_in_metadata_only_cross_validate(setup):
    """``finetune()`` with the training questions in metadata and no validation pairs: gamma
    is cross-validated (10 folds, repeated), then every question is used (issue target:
    NUDGE-N >= 44.8; measured 45.4 at the default seed, 45.1-45.4 over fold seeds 0-4 with
    ``benchmarks/one_set_of_pairs.py --frameworks``)."""
    ds = setup["ds"]
    index = VectorStoreIndex(setup["nodes"], embed_model=setup["embed"])
    embedding_dict = index.vector_store.data.embedding_dict
    engine = NudgeFinetuneEngine.from_index(index, state_dir="memory")
    result = engine.finetune()
    assert result.method == "cv" and result.n_folds == 10
    # every question is held out once per repetition, and every one is in the final fit
    assert result.n_train_queries == result.n_val_queries == len(set(ds.train.query_texts))
    tuned = np.asarray([embedding_dict[i] for i in ds.doc_ids], dtype=np.float32)
    after = _exact_ndcg(tuned, setup)
    print(f"ndcg@10 one set of pairs (cv): {after:.4f}, gamma {result.gamma}")
    assert after >= 0.448
