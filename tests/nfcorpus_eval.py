"""nfcorpus end-to-end helpers shared by the LangChain and LlamaIndex store tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nudge_rag._metrics import evaluate
from nudge_rag._queryset import Relevance


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


def _of_queries(relevance: Relevance, queries: np.ndarray) -> Relevance:
    """The relevance of the queries of rows ``queries``, in that order."""
    spans = [slice(relevance.indptr[q], relevance.indptr[q + 1]) for q in queries]
    return Relevance.from_lists(
        [relevance.indices[s].tolist() for s in spans],
        [relevance.grades[s].tolist() for s in spans],
    )


def exact_ndcg(ds, doc_vectors: np.ndarray, k: int = 10, queries: np.ndarray | None = None):
    """Test nDCG@``k`` of an exact inner-product search over ``doc_vectors`` (rows = doc ids),
    over every test query or the test queries of rows ``queries``."""
    test = ds.test
    rows = np.arange(test.n_queries) if queries is None else queries
    scores = test.query_embeddings[rows] @ np.asarray(doc_vectors, dtype=np.float32).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return evaluate(top, _of_queries(test.relevance, rows), k=k)[f"ndcg@{k}"]


def ranked_ndcg(
    ds, ranked_ids: Sequence[Sequence[str]], k: int = 10, queries: np.ndarray | None = None
) -> float:
    """Test nDCG@``k`` of the doc ids a retriever returned for each test query (or for the
    test queries of rows ``queries``), in order."""
    test = ds.test
    queries = np.arange(test.n_queries) if queries is None else queries
    row_of_id = {doc_id: row for row, doc_id in enumerate(ds.doc_ids)}
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    for q, ids in enumerate(ranked_ids):
        hits = [row_of_id[i] for i in list(ids)[:k]]
        rows[q, : len(hits)] = hits
    return evaluate(rows, _of_queries(test.relevance, queries), k=k)[f"ndcg@{k}"]
