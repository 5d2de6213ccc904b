"""Exact top-k search over document embeddings, streamed in blocks.

Queries and documents are both processed in blocks: each ``(query block, doc block)`` score
tile is one float32 BLAS matmul, its best ``k`` columns are picked with ``np.argpartition``
and merged into a running top-k. A document matrix given as ``np.memmap`` is therefore read
one block at a time and never loaded whole.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from nudge_rag._queryset import as_relevance
from nudge_rag._validation import (
    check_answer_range,
    check_finite_rows,
    check_matrix,
    check_positive_int,
)

logger = logging.getLogger(__name__)

__all__ = ["search"]

SIMILARITIES = ("cosine", "dot")


def search(
    query_embeddings: Any,
    doc_embeddings: Any,
    k: int = 10,
    *,
    similarity: Literal["cosine", "dot"] = "cosine",
    batch_size: int = 1024,
    doc_batch_size: int = 16384,
    exclude: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` best documents of each query by exact (brute-force) search.

    Ranking is by decreasing score; equal scores are ordered by increasing document row, so
    results are deterministic and do not depend on the block sizes.

    With ``similarity="cosine"`` queries and documents are L2-normalised block by block (the
    stored arrays are not changed); an all-zero vector stays zero and scores 0 against
    everything, without NaN. With ``"dot"`` the raw inner product is used.

    When fewer than ``k`` documents can be returned for a query (``k`` larger than the
    corpus, or documents excluded), the result keeps ``k`` columns and the empty slots hold
    row ``-1`` and score ``-inf``.

    Args:
        query_embeddings: ``(n_queries, dim)`` float32 array (other float dtypes converted).
        doc_embeddings: ``(n_docs, dim)`` float32 array or ``np.memmap``; read in blocks of
            ``doc_batch_size`` rows (other float dtypes converted per block).
        k: number of results per query.
        similarity: ``"cosine"`` or ``"dot"``.
        batch_size: queries per block.
        doc_batch_size: documents per block; the score tile is
            ``batch_size x doc_batch_size`` float32.
        exclude: optional document rows never to return, per query: a list of lists of rows,
            an ``(indptr, indices)`` pair, a ``scipy.sparse`` ``(n_queries, n_docs)`` matrix,
            a ``Relevance`` or a ``QuerySet``.

    Returns:
        ``(scores, rows)``: ``(n_queries, k)`` float32 scores and ``(n_queries, k)`` int64
        document rows, best first.

    Raises:
        ValueError: bad shapes, dimension mismatch, NaN/inf, unknown ``similarity``, or
            excluded rows out of range.

    Example:
        >>> docs = np.eye(3, dtype=np.float32)
        >>> scores, rows = search(docs[[2]], docs, k=2)
        >>> rows.tolist()
        [[2, 0]]
    """
    if similarity not in SIMILARITIES:
        msg = f"similarity must be one of {SIMILARITIES}, got {similarity!r}"
        raise ValueError(msg)
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    doc_batch_size = check_positive_int(doc_batch_size, "doc_batch_size")
    docs = _check_docs(doc_embeddings)
    n_docs, dim = docs.shape
    queries = check_matrix(query_embeddings, "query_embeddings", dim=dim, allow_empty=True)
    n_queries = queries.shape[0]
    excl = _check_exclude(exclude, n_queries, n_docs)
    if similarity == "cosine":
        queries = _normalize(queries)
    logger.debug(
        "searching %d queries in %d documents (k=%d, %s)", n_queries, n_docs, k, similarity
    )

    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    rows = np.full((n_queries, k), -1, dtype=np.int64)
    for d0 in range(0, n_docs, doc_batch_size):
        d1 = min(d0 + doc_batch_size, n_docs)
        block = np.asarray(docs[d0:d1], dtype=np.float32)
        check_finite_rows(block, "doc_embeddings", offset=d0)
        if similarity == "cosine":
            block = _normalize(block)
        for q0 in range(0, n_queries, batch_size):
            q1 = min(q0 + batch_size, n_queries)
            tile = queries[q0:q1] @ block.T
            if excl is not None:
                _mask_excluded(tile, excl, q0, q1, d0, d1)
            cand_scores, cand_cols = _block_candidates(tile, scores[q0:q1, k - 1], k)
            cand_rows = np.where(cand_cols >= 0, cand_cols + d0, -1)
            scores[q0:q1], rows[q0:q1] = _merge(
                scores[q0:q1], rows[q0:q1], cand_scores, cand_rows, k
            )
    rows[np.isneginf(scores)] = -1
    return scores, rows


# ---------------------------------------------------------------------- helpers
def _check_docs(doc_embeddings: Any) -> np.ndarray:
    """Check shape and dtype of the documents without reading a large array in full."""
    if not isinstance(doc_embeddings, np.ndarray):
        return check_matrix(doc_embeddings, "doc_embeddings")
    check_matrix(doc_embeddings[:1], "doc_embeddings", check_finite=False)
    if doc_embeddings.ndim != 2:  # pragma: no cover - check_matrix caught it
        msg = f"doc_embeddings must be 2-D, got shape {doc_embeddings.shape}"
        raise ValueError(msg)
    return doc_embeddings


def _normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.finfo(np.float32).tiny, out=norms)
    return (x / norms).astype(np.float32, copy=False)


def _block_candidates(
    tile: np.ndarray, threshold: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ``tile`` that can still enter each row's running top-k.

    Blocks arrive in increasing row order, so a score must beat the running k-th best
    (``threshold``) strictly: on a tie the earlier, lower row already holds the place. Rows
    with at most ``k`` such columns take them directly; the others go through
    :func:`_block_top_k`.

    Returns:
        ``(n_rows, k')`` float32 scores and int64 columns (``-inf`` / ``-1`` where empty),
        with ``k' = min(k, n_cols)``.
    """
    n_rows, n_cols = tile.shape
    if n_cols <= k:
        cols = np.broadcast_to(np.arange(n_cols, dtype=np.int64), (n_rows, n_cols)).copy()
        return tile, cols
    if np.isneginf(threshold).all():
        return _block_top_k(tile, k)
    width = -(-n_cols // 8) * 8  # pad to whole 8-byte words for _nonzero_sparse
    above = np.zeros((n_rows, width), dtype=bool)
    np.greater(tile, threshold[:, None], out=above[:, :n_cols])
    count = np.count_nonzero(above, axis=1)
    big = np.flatnonzero(count > k)
    if big.size == n_rows:
        return _block_top_k(tile, k)
    out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    out_cols = np.full((n_rows, k), -1, dtype=np.int64)
    if big.size:
        out_scores[big], out_cols[big] = _block_top_k(tile[big], k)
        above[big] = False
    r, c = _nonzero_sparse(above)  # grouped by row, columns increasing
    if r.size:
        pos = np.arange(r.size) - np.searchsorted(r, r)
        out_scores[r, pos] = tile[r, c]
        out_cols[r, pos] = c
    return out_scores, out_cols


def _nonzero_sparse(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a sparse 2-D bool array whose width is a multiple of 8.

    Scans 8 bytes at a time (as uint64 words) and expands only the non-zero words, which is
    several times faster than ``np.nonzero`` on the bytes when few entries are set.
    """
    words = mask.view(np.uint64)
    word_rows, word_cols = np.nonzero(words)
    if word_rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    cols = word_cols[:, None] * 8 + np.arange(8)
    i, j = np.nonzero(mask[word_rows[:, None], cols])
    return word_rows[i].astype(np.int64), cols[i, j].astype(np.int64)


def _block_top_k(tile: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``tile`` (unsorted), ties to the lower column.

    Requires ``k < n_cols``.

    Returns:
        ``(n_rows, k)`` float32 scores and int64 column indices.
    """
    n_cols = tile.shape[1]
    cols = np.argpartition(tile, n_cols - k, axis=1)[:, n_cols - k :].astype(np.int64)
    picked = np.take_along_axis(tile, cols, axis=1)
    # argpartition breaks ties at the boundary arbitrarily: rows where more columns than
    # were picked tie with the k-th score are redone with a stable sort (lower column first).
    threshold = picked.min(axis=1)
    n_at_least = np.count_nonzero(tile >= threshold[:, None], axis=1)
    redo = np.flatnonzero((n_at_least > k) & ~np.isneginf(threshold))
    if redo.size:
        order = np.argsort(-tile[redo], axis=1, kind="stable")[:, :k]
        cols[redo] = order
        picked[redo] = np.take_along_axis(tile[redo], order, axis=1)
    return picked, cols


def _merge(
    best_scores: np.ndarray,
    best_rows: np.ndarray,
    cand_scores: np.ndarray,
    cand_rows: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of the union, sorted by decreasing score then increasing row."""
    scores = np.concatenate([best_scores, cand_scores], axis=1)
    rows = np.concatenate([best_rows, cand_rows], axis=1)
    row_key = np.where(rows < 0, np.iinfo(np.int64).max, rows)
    order = np.lexsort((row_key, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _check_exclude(
    exclude: Any, n_queries: int, n_docs: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Turn ``exclude`` into sorted ``(query, doc)`` pair arrays, or ``None``."""
    if exclude is None:
        return None
    relevance, _ = as_relevance(exclude, "exclude", n_queries=n_queries)
    check_answer_range(relevance.indices, relevance.indptr, "exclude", n_docs)
    return relevance.query_of_pair(), relevance.indices


def _mask_excluded(
    tile: np.ndarray,
    excl: tuple[np.ndarray, np.ndarray],
    q0: int,
    q1: int,
    d0: int,
    d1: int,
) -> None:
    """Set the excluded ``(query, doc)`` entries of the tile to ``-inf`` in place."""
    query, doc = excl
    lo, hi = np.searchsorted(query, [q0, q1])
    q, d = query[lo:hi], doc[lo:hi]
    inside = (d >= d0) & (d < d1)
    tile[q[inside] - q0, d[inside] - d0] = -np.inf
