"""nfcorpus end-to-end helpers shared by the LangChain and LlamaIndex store tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudge_rag._metrics import evaluate


def split_pairs(ds, name: str) -> list[tuple[str, str]]:
    """``(question text, doc id)`` for every relevant document of split ``name`` of ``ds``."""
    split = ds.split(name)
    rel = split.relevance
    return [
        (split.query_texts[q], ds.doc_ids[int(row)])
        for q in range(split.n_queries)
        for row in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]
    ]


def query_vectors(ds) -> dict[str, np.ndarray]:
    """Every split's question texts -> their stored MiniLM vectors (for a lookup double)."""
    table: dict[str, np.ndarray] = {}
    for split in ds.splits.values():
        table.update(zip(split.query_texts, split.query_embeddings, strict=True))
    return table


def exact_ndcg(ds, doc_vectors: np.ndarray, k: int = 10) -> float:
    """Test nDCG@``k`` of an exact inner-product search over ``doc_vectors`` (rows = doc ids)."""
    test = ds.test
    scores = test.query_embeddings @ np.asarray(doc_vectors, dtype=np.float32).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return evaluate(top, test.relevance, k=k)[f"ndcg@{k}"]


def ranked_ndcg(ds, ranked_ids: Sequence[Sequence[str]], k: int = 10) -> float:
    """Test nDCG@``k`` of the doc ids a retriever returned for each test query, in order."""
    test = ds.test
    row_of_id = {doc_id: row for row, doc_id in enumerate(ds.doc_ids)}
    rows = np.full((test.n_queries, k), -1, dtype=np.int64)
    for q, ids in enumerate(ranked_ids):
        hits = [row_of_id[i] for i in list(ids)[:k]]
        rows[q, : len(hits)] = hits
    return evaluate(rows, test.relevance, k=k)[f"ndcg@{k}"]
