"""Validation queries scored against the active rows: ``(S, T)`` blocks and recall@k.

A validation query ``q`` scores a moving row ``j`` as ``alpha_j S + beta_j T`` with
``S = q.v_j`` and ``T = q.w_j``, where ``w`` is the variant's second basis (``g`` for NUDGE-N,
``-unit(g)`` for NUDGE-M) and ``alpha``/``beta`` depend on gamma: two matmuls, then per-row
coefficients per candidate gamma.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nudge_rag._queryset import QuerySet
from nudge_rag._solver import _limits

#: ``(s_moved, t_moved, flat_answers, best_non_static, best_ans_static) -> (n_gamma,) hits``:
#: a variant's faster hit@1 count for one query block (see :func:`_val_recall`).
BlockHits = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class _Validation:
    """A set of validation queries with the active rows they are scored against.

    Args:
        queries: the validation queries.
        cols: ``(queries.n_pairs,)`` int64 active position of each answer.
        v: ``(n_active, dim)`` float32 unit active rows.
        w: ``(n_moved, dim)`` float32 second basis of the first ``n_moved`` active rows.
    """

    def __init__(self, queries: QuerySet, cols: np.ndarray, v: np.ndarray, w: np.ndarray):
        self.queries = queries
        self.cols = cols
        self.qrows = queries.query_of_pair()
        self.v, self.w = v, w
        self._whole: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_queries(self) -> int:
        """Number of validation queries."""
        return self.queries.n_queries

    def query_blocks(self, n_cols: int) -> list[slice]:
        """Query slices whose ``(b, n_cols)`` score blocks fit ``BLOCK_ELEMENTS``."""
        n_val = self.n_queries
        rows = max(1, _limits.BLOCK_ELEMENTS // max(n_cols, 1))
        return [slice(s, min(s + rows, n_val)) for s in range(0, n_val, rows)]

    def block_scores(self, blk: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(S, T)`` of the validation queries in ``blk``.

        ``S = q.v`` for every active row and ``T = q.w`` for the moving rows.

        Kept when the whole validation set is one block (small problems score it once for
        the answer bounds and the gamma search).
        """
        if self._whole is not None and blk.start == 0 and blk.stop >= self.n_queries:
            return self._whole
        q = self.queries.embeddings[blk]
        s, t = q @ self.v.T, q @ self.w.T
        if blk.start == 0 and blk.stop >= self.n_queries:
            self._whole = (s, t)
        return s, t

    def preset(self, s: np.ndarray, t: np.ndarray) -> None:
        """Use ``(S, T)`` computed elsewhere for the whole set (one block; see block_scores)."""
        assert self.n_queries * (self.v.shape[0] + 1) <= _limits.BLOCK_ELEMENTS
        self._whole = (s, t)

    def pair_scores(self, pairwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(n_pairs,)`` ``S`` and ``T`` of each validation query with its answer row.

        ``T`` is 0 for answers that cannot move. Small sets are scored as one block (kept
        for later), unless ``pairwise``: then each pair is scored alone.
        """
        cols, qrows = self.cols, self.qrows
        has_w = cols < self.w.shape[0]
        if not pairwise and self.n_queries * self.v.shape[0] <= _limits.BLOCK_ELEMENTS:
            s, t = self.block_scores(slice(0, self.n_queries))
            s_pairs = s[qrows, cols]
            t_pairs = np.zeros(cols.size, dtype=np.float32)
            t_pairs[has_w] = t[qrows[has_w], cols[has_w]]
            return s_pairs, t_pairs
        out = []
        dim = self.v.shape[1]
        for vectors, pairs in ((self.v, np.arange(cols.size)), (self.w, np.flatnonzero(has_w))):
            dots = np.zeros(cols.size, dtype=np.float32)
            step = max(1, _limits.BLOCK_ELEMENTS // (4 * dim))
            for s0 in range(0, pairs.size, step):
                part = pairs[s0 : s0 + step]
                q = self.queries.embeddings[qrows[part]]
                dots[part] = np.einsum("ij,ij->i", q, vectors[cols[part]])
            out.append(dots)
        return out[0], out[1]


def _val_recall(
    val: _Validation,
    passive_top: np.ndarray,
    n_moved: int,
    coeffs: tuple[np.ndarray, np.ndarray],
    block_hits: BlockHits | None = None,
) -> np.ndarray:
    """Validation recall@k summed over the queries (denominator ``min(#answers, k)``).

    The score of validation query ``q`` for moved active row ``j`` is
    ``alpha_j * (q.v_j) + beta_j * (q.w_j)``; other rows keep ``q.v_j``.

    Args:
        val: the validation queries.
        passive_top: ``(n_val, k)`` their best scores over passive rows (``k`` = val_k).
        n_moved: rows ``0..n_moved-1`` of the problem are those whose score depends on
            gamma (the training-answer rows).
        coeffs: ``(alpha, beta)``, two ``(n_moved, n_gamma)`` float32 arrays: column ``c``
            holds the coefficients at candidate gamma ``c``.
        block_hits: with ``k == 1``, a variant's own hit count per query block (NUDGE-N
            scores only the (query, row) pairs that can be top-1; exact).

    Returns:
        ``(n_gamma,)`` float64 sums of recall@k over the validation queries (divide by
        ``val.n_queries`` for the mean).
    """
    k = passive_top.shape[1]
    queries = val.queries
    n_active = val.v.shape[0]
    moved_idx = np.arange(n_moved)
    static_idx = np.arange(n_moved, n_active)
    pos_in_moved = np.full(n_active, -1, dtype=np.int64)
    pos_in_moved[moved_idx] = np.arange(moved_idx.size)
    pos_in_static = np.full(n_active, -1, dtype=np.int64)
    pos_in_static[static_idx] = np.arange(static_idx.size)
    n_ans = np.diff(queries.indptr)
    denom = np.minimum(n_ans, k).astype(np.float64)
    totals = np.zeros(coeffs[0].shape[1], dtype=np.float64)
    pair_q, pair_col = val.qrows, val.cols

    for blk in val.query_blocks(n_active + k):
        b = blk.stop - blk.start
        lo, hi = np.searchsorted(pair_q, [blk.start, blk.stop])
        pq = pair_q[lo:hi] - blk.start
        pc = pair_col[lo:hi]
        s_all, t_all = val.block_scores(blk)
        s_moved, t_moved = s_all[:, :n_moved], t_all[:, :n_moved]
        # Static columns: passive top-k (never answers) and active rows that do not move.
        s_static = s_all[:, n_moved:]
        in_static = pos_in_static[pc] >= 0
        static_ans = np.full((b, 0), -np.inf, dtype=np.float32)
        if k == 1:
            sa = s_static.copy()
            flat_ans = pq[in_static] * static_idx.size + pos_in_static[pc[in_static]]
            ans_scores_static = sa.reshape(-1)[flat_ans]
            sa.reshape(-1)[flat_ans] = -np.inf
            best_non_static = np.maximum(
                passive_top[blk, 0],
                sa.max(axis=1) if static_idx.size else -np.inf,
            )
            best_ans_static = np.full(b, -np.inf, dtype=np.float32)
            np.maximum.at(best_ans_static, pq[in_static], ans_scores_static)
        else:
            static_lab = np.zeros(s_static.shape, dtype=bool)
            static_lab[pq[in_static], pos_in_static[pc[in_static]]] = True
            static_ans = (s_static, static_lab)
        mov = ~in_static
        flat_mov = pq[mov] * moved_idx.size + pos_in_moved[pc[mov]]
        moved_lab = None
        if k > 1:
            moved_lab = np.zeros((b, moved_idx.size), dtype=bool)
            moved_lab.reshape(-1)[flat_mov] = True
        if k == 1 and block_hits is not None:
            totals += block_hits(s_moved, t_moved, flat_mov, best_non_static, best_ans_static)
            continue
        scores = np.empty_like(s_moved)
        tmp = np.empty_like(s_moved)
        for c in range(totals.size):
            alpha = np.ascontiguousarray(coeffs[0][:, c])
            beta = np.ascontiguousarray(coeffs[1][:, c])
            np.multiply(s_moved, alpha, out=scores)
            np.multiply(t_moved, beta, out=tmp)
            scores += tmp
            if k == 1:
                ans = scores.reshape(-1)[flat_mov]
                scores.reshape(-1)[flat_mov] = -np.inf
                best_non = np.maximum(
                    best_non_static, scores.max(axis=1) if moved_idx.size else -np.inf
                )
                best_ans = best_ans_static.copy()
                np.maximum.at(best_ans, pq[mov], ans)
                totals[c] += np.count_nonzero(best_ans > best_non)
            else:
                s_static_blk, lab_static = static_ans
                all_scores = np.concatenate([passive_top[blk], s_static_blk, scores], axis=1)
                all_lab = np.concatenate(
                    [np.zeros((b, k), dtype=bool), lab_static, moved_lab], axis=1
                )
                top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
                hits = np.take_along_axis(all_lab, top, axis=1).sum(axis=1)
                totals[c] += float((hits / denom[blk]).sum())
    return totals
