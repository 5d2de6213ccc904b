"""Retrieval metrics over ranked lists of document rows, vectorised over queries.

The relevance judgements are the package's one sparse CSR structure
(:class:`~nudge_rag._queryset.Relevance`, re-exported here); membership of a
retrieved row in a query's judged set is tested with ``np.searchsorted`` on sorted
``query * n_docs + doc`` keys, so no dense ``(n_queries, n_docs)`` matrix is ever built.

Definitions (as the NUDGE reference ``util/utils.py::calc_metrics_batch``):

* ``recall@k`` = ``|top-k ∩ relevant| / min(#relevant, k)``.
* ``ndcg@k``: gain = grade (linear), discount ``1 / log2(rank + 1)`` with ranks from 1; the ideal
  DCG takes the query's ``k`` largest grades.
* ``mrr@k`` = ``1 / rank`` of the first relevant document in the top ``k``, 0 if none.
* ``hit@k`` = 1 if any relevant document is in the top ``k``, else 0.

A query without relevant documents has no defined recall or nDCG: the per-query functions
return NaN for it, and :func:`evaluate` leaves it out of the means with a logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from nudge_rag._queryset import Relevance

logger = logging.getLogger(__name__)

__all__ = ["Relevance", "recall_at_k", "ndcg_at_k", "mrr_at_k", "hit_at_k", "evaluate"]

METRIC_NAMES = ("recall", "ndcg", "mrr", "hit")


# ---------------------------------------------------------------------- per-query metrics
def recall_at_k(retrieved: Any, relevance: Relevance, k: int = 10) -> np.ndarray:
    """Recall at ``k`` of each query: ``|top-k ∩ relevant| / min(#relevant, k)``.

    Args:
        retrieved: ``(n_queries, k')`` int array of document rows, best first, ``k' >= k``;
            ``-1`` marks an empty slot (no result).
        relevance: the judgements, one row per query.
        k: cut-off.

    Returns:
        ``(n_queries,)`` float64; NaN for queries without relevant documents.
    """
    return _recall(*_gains(retrieved, relevance, k), relevance, k)


def hit_at_k(retrieved: Any, relevance: Relevance, k: int = 10) -> np.ndarray:
    """Hit rate at ``k`` of each query: 1 if a relevant document is in the top ``k``, else 0.

    Args:
        retrieved: ``(n_queries, k')`` int array of document rows, best first (``-1``: none).
        relevance: the judgements, one row per query.
        k: cut-off.

    Returns:
        ``(n_queries,)`` float64; NaN for queries without relevant documents.
    """
    return _hit(*_gains(retrieved, relevance, k), relevance, k)


def mrr_at_k(retrieved: Any, relevance: Relevance, k: int = 10) -> np.ndarray:
    """Reciprocal rank at ``k`` of each query: ``1 / rank`` of the first relevant hit, or 0.

    Args:
        retrieved: ``(n_queries, k')`` int array of document rows, best first (``-1``: none).
        relevance: the judgements, one row per query.
        k: cut-off.

    Returns:
        ``(n_queries,)`` float64; NaN for queries without relevant documents.
    """
    return _mrr(*_gains(retrieved, relevance, k), relevance, k)


def ndcg_at_k(retrieved: Any, relevance: Relevance, k: int = 10) -> np.ndarray:
    """Normalised discounted cumulative gain at ``k`` of each query, with graded gains.

    ``DCG = sum_r grade(doc at rank r) / log2(r + 1)`` over ranks ``r = 1..k``; the ideal DCG
    uses the query's ``k`` largest grades in decreasing order.

    Args:
        retrieved: ``(n_queries, k')`` int array of document rows, best first (``-1``: none).
        relevance: the judgements (with grades), one row per query.
        k: cut-off.

    Returns:
        ``(n_queries,)`` float64 in ``[0, 1]``; NaN for queries without relevant documents.
    """
    return _ndcg(*_gains(retrieved, relevance, k), relevance, k)


# Each takes the (n_queries, k) gains, the (n_queries,) relevant counts, relevance and k.
def _recall(gains: np.ndarray, n_rel: np.ndarray, relevance: Relevance, k: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gains > 0).sum(axis=1) / np.minimum(n_rel, k).astype(np.float64)


def _hit(gains: np.ndarray, n_rel: np.ndarray, relevance: Relevance, k: int) -> np.ndarray:
    return np.where(n_rel > 0, (gains > 0).any(axis=1).astype(np.float64), np.nan)


def _mrr(gains: np.ndarray, n_rel: np.ndarray, relevance: Relevance, k: int) -> np.ndarray:
    hit = gains > 0
    rr = np.where(hit.any(axis=1), 1.0 / (np.argmax(hit, axis=1) + 1.0), 0.0)
    return np.where(n_rel > 0, rr, np.nan)


def _ndcg(gains: np.ndarray, n_rel: np.ndarray, relevance: Relevance, k: int) -> np.ndarray:
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = gains @ discount
    idcg = _ideal_dcg(relevance, k, discount)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, dcg / idcg, np.nan)


_METRIC_FUNCTIONS = {"recall": _recall, "ndcg": _ndcg, "mrr": _mrr, "hit": _hit}


def evaluate(
    retrieved: Any,
    relevance: Relevance,
    k: int | Sequence[int] = 10,
    *,
    metrics: Sequence[str] = METRIC_NAMES,
    per_query: bool = False,
) -> dict[str, Any]:
    """Compute retrieval metrics, averaged over the queries that have relevant documents.

    Queries without relevant documents are left out of the means (a warning is logged with
    their count); if no query has one, ``ValueError`` is raised.

    Args:
        retrieved: ``(n_queries, k')`` int array of document rows, best first, with
            ``k' >= max(k)``; ``-1`` marks an empty slot.
        relevance: the judgements, one row per query (``relevance.n_queries == n_queries``).
        k: one cut-off or several.
        metrics: names among ``"recall"``, ``"ndcg"``, ``"mrr"``, ``"hit"``.
        per_query: return the ``(n_queries,)`` float64 arrays (NaN for queries without
            relevant documents) instead of their means.

    Returns:
        ``{"recall@10": 0.31, "ndcg@10": 0.32, ...}`` (floats, or arrays with ``per_query``).

    Raises:
        ValueError: unknown metric name, bad ``k``, shape mismatch, or no query with a
            relevant document.
    """
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not ks:
        msg = "k must be a positive integer or a non-empty list of them, got []"
        raise ValueError(msg)
    unknown = [m for m in metrics if m not in _METRIC_FUNCTIONS]
    if unknown:
        msg = f"metrics must be among {list(METRIC_NAMES)}, got unknown {unknown!r}"
        raise ValueError(msg)
    n_rel = relevance.n_relevant()
    valid = n_rel > 0
    if not per_query:
        if not valid.any():
            msg = (
                f"relevance has no query with a relevant document ({relevance.n_queries} "
                "queries); metrics are undefined"
            )
            raise ValueError(msg)
        if not valid.all():
            logger.warning(
                "%d of %d queries have no relevant documents and are left out of the means",
                int((~valid).sum()),
                valid.size,
            )
    out: dict[str, Any] = {}
    for cutoff in ks:
        gains, n_rel = _gains(retrieved, relevance, cutoff)
        for name in metrics:
            values = _METRIC_FUNCTIONS[name](gains, n_rel, relevance, int(cutoff))
            key = f"{name}@{int(cutoff)}"
            out[key] = values if per_query else float(values[valid].mean())
    return out


# ---------------------------------------------------------------------- helpers
def _gains(retrieved: Any, relevance: Relevance, k: Any) -> tuple[np.ndarray, np.ndarray]:
    """Grade of each retrieved slot and the number of relevant documents of each query.

    Returns:
        ``(n_queries, k)`` float64 grades (0 where not relevant or empty) and
        ``(n_queries,)`` int64 counts.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        msg = f"k must be an integer >= 1, got {k!r}"
        raise ValueError(msg)
    k = int(k)
    top = _check_retrieved(retrieved, relevance.n_queries, k)
    n_queries = top.shape[0]
    gains = np.zeros((n_queries, k), dtype=np.float64)
    if relevance.n_pairs and top.size:
        n_bound = np.int64(max(int(relevance.indices.max()), int(top.max()), 0) + 1)
        # Relevance keeps pairs sorted by (query, doc), so the keys are sorted.
        keys = relevance.query_of_pair() * n_bound + relevance.indices
        probe = np.arange(n_queries, dtype=np.int64)[:, None] * n_bound + top
        pos = np.searchsorted(keys, probe)
        pos_clipped = np.minimum(pos, keys.size - 1)
        found = (pos < keys.size) & (keys[pos_clipped] == probe) & (top >= 0)
        gains[found] = relevance.grades[pos_clipped[found]]
    return gains, relevance.n_relevant()


def _ideal_dcg(relevance: Relevance, k: int, discount: np.ndarray) -> np.ndarray:
    """``(n_queries,)`` float64 ideal DCG at ``k`` from each query's largest grades."""
    query = relevance.query_of_pair()
    order = np.lexsort((-relevance.grades, query))
    rank = np.arange(order.size, dtype=np.int64) - relevance.indptr[query[order]]
    top = rank < k
    weights = relevance.grades[order][top] * discount[rank[top]]
    return np.bincount(query[order][top], weights=weights, minlength=relevance.n_queries)


def _check_retrieved(retrieved: Any, n_queries: int, k: int) -> np.ndarray:
    """Return the first ``k`` columns of ``retrieved`` as int64, after checks."""
    top = np.asarray(retrieved)
    if top.ndim != 2:
        msg = (
            f"retrieved must be 2-D with shape (n_queries, k), got {top.ndim}-D array of "
            f"shape {top.shape}"
        )
        raise ValueError(msg)
    if top.size and not np.issubdtype(top.dtype, np.integer):
        msg = f"retrieved must hold integer document rows, got dtype {top.dtype}"
        raise TypeError(msg)
    if top.shape[0] != n_queries:
        msg = (
            f"retrieved has {top.shape[0]} rows, but relevance has {n_queries} queries; "
            "give one ranked list per query"
        )
        raise ValueError(msg)
    if top.shape[1] < k:
        msg = (
            f"retrieved has {top.shape[1]} columns, but k = {k}; retrieve at least k "
            "documents per query (pad with -1)"
        )
        raise ValueError(msg)
    top = top[:, :k].astype(np.int64, copy=False)
    if top.size and top.min() < -1:
        q, col = np.unravel_index(int(np.argmin(top)), top.shape)
        msg = (
            f"retrieved must hold document rows >= 0 or -1 for no result, but query {int(q)} "
            f"has {int(top[q, col])} at rank {int(col) + 1}"
        )
        raise ValueError(msg)
    if k > 1:
        ordered = np.sort(top, axis=1)
        dup = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
        if dup.any():
            q, col = np.argwhere(dup)[0]
            msg = (
                f"retrieved lists document row {int(ordered[q, col])} more than once for "
                f"query {int(q)}; each ranked list must hold distinct rows"
            )
            raise ValueError(msg)
    return top
