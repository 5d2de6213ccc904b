"""NUDGE-M: each answer row gets ``gamma * unit(g)`` added (a change of norm exactly gamma).

Its output is not normalised, so it must be scored by dot product. Gamma is found exactly:
a validation query ``q`` scores row ``y`` as ``S_y - gamma G_y`` (``S = q.v``,
``G = -q.unit(g)``), so each (query, answer) pair wins top-1 on an interval of gamma
(:func:`_pair_intervals`), and the point covered by the most intervals is the best
validation hit@1 (:func:`_most_covered_point`), as in the paper and the reference.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nudge_rag._queryset import QuerySet
from nudge_rag._solver import _limits
from nudge_rag._solver._base import _NudgeBase
from nudge_rag._solver._problem import _Problem, _Sums
from nudge_rag._solver._scoring import _val_recall, _Validation

__all__ = ["NudgeM"]


class NudgeM(_NudgeBase):
    """NUDGE-M: bounded-magnitude change; the output must be scored by dot product.

    Each document that answers training queries gets ``gamma * unit(sum of its training
    queries)`` added to its normalised embedding. ``gamma`` is chosen exactly: every
    (validation query, answer) pair wins top-1 on an interval of gamma, and the point covered
    by the most intervals is taken (validation hit@1), as in the paper and the reference.

    Args:
        gamma: a fixed step size; ``None`` (default) finds it by the interval sweep.
        val_fraction: share of training queries split off for validation when ``val`` is
            not given (seeded by ``random_state``).
        random_state: seed for that split.
        batch_size: documents per block in the streaming pass over the corpus.
        show_progress: show tqdm progress bars over the streaming pass over the documents
            that answer no query (needs ``tqdm``; without it a warning is logged).

    Attributes:
        gamma_: the step size used.
        val_score_: validation hit@1 at ``gamma_`` (``None`` without validation).
        changed_rows_: ``(n_changed,)`` int64 rows that moved.
        changed_embeddings_: ``(n_changed, dim)`` float32 new vectors (not unit-norm).
        embeddings_: ``(n_docs, dim)`` float32, all rows (built on access).
    """

    similarity: ClassVar[str] = "dot"

    def _gamma_upper(self) -> float:
        return 1e18  # the output has norm ~gamma: keep it far inside float32

    def _fit_problem(
        self,
        problem: _Problem,
        val: QuerySet | None,
        fixed: float | None,
        passive_scores: np.ndarray | None,
        dense: np.ndarray | None,
    ) -> None:
        n_moved = problem.n_train_rows
        moves, w = _direction(problem.sums)
        if fixed is not None:
            gamma = fixed
            val_score = None
            if val is not None:
                view = _Validation(val, problem.val_cols, problem.v, w)
                passive_top = problem.stream(val.embeddings, 1, start=passive_scores)
                alpha = np.ones((n_moved, 1), dtype=np.float32)
                beta = np.full((n_moved, 1), -gamma, dtype=np.float32)
                hits = _val_recall(view, passive_top, n_moved, (alpha, beta))
                val_score = float((hits / val.n_queries)[0])
            else:
                problem.check_passive_rows()
        else:
            view = _Validation(val, problem.val_cols, problem.v, w)
            gamma, count = _sweep(problem, view, n_moved, passive_scores)
            # Closed intervals of two answers of one query can both cover gamma (ties).
            val_score = min(count, val.n_queries) / val.n_queries
        if gamma == 0 or not moves.any():
            self._set_result(
                gamma, val_score, np.zeros(0, dtype=np.int64), np.zeros((0, problem.dim))
            )
            return
        moved = np.flatnonzero(moves)
        ones = np.ones(n_moved, dtype=np.float32)
        beta = np.full(n_moved, -gamma, dtype=np.float32)
        new = problem.moved_vectors(w, moved, ones, beta, dense)
        self._set_result(gamma, val_score, problem.active[moved], new)


def _direction(sums: _Sums) -> tuple[np.ndarray, np.ndarray]:
    """``moves`` (rows with a direction) and ``w = -unit(g)`` (0 where ``g = 0``), a new array.

    A row then scores ``q.v - gamma (q.w) = q.v + gamma q.unit(g)``.
    """
    g = sums.g
    moves = sums.norm > 0  # a zero sum of training queries gives no direction
    neg_norm = np.where(moves, -sums.norm, 1.0)  # g = 0 rows stay 0
    w = np.empty_like(g)
    step = max(1, _limits.CACHE_ELEMENTS // max(g.shape[1], 1))
    for s0 in range(0, g.shape[0], step):
        sl = slice(s0, s0 + step)
        np.divide(g[sl], neg_norm[sl, None], out=w[sl])
    return moves, w


def _sweep(
    problem: _Problem, val: _Validation, n_moved: int, passive_scores: np.ndarray | None
) -> tuple[float, int]:
    """Exact gamma: the point covered by the most (query, answer) winning intervals.

    For query ``q`` a row scores ``S - gamma * G`` with ``S = q.v`` and
    ``G = -q.unit(g)`` (0 for rows that do not move, which collapse with the passive
    rows into their best score). Answer ``x`` wins on ``[low, high]`` where every other
    row ``y`` has ``S_y - S_x <= gamma (G_y - G_x)``. Rows dominated by another row (no
    larger S, no smaller G) never bind, so each query only needs its Pareto front.

    On large corpora the intervals are first found without the passive rows; a query
    whose best passive score then beats ``S_x - gamma G_x`` of every answer on its whole
    interval cannot win anywhere and stops being scored in the streaming pass.
    """
    n_val = val.n_queries
    low, high, ok, s_x, g_x = _pair_intervals(val, n_moved)
    stop_above = None
    if problem.n_passive * n_val > _limits.EARLY_STOP_SCORES:
        stop_above = _reach_bounds(val.qrows, n_val, low, high, ok, s_x, g_x)
    passive_top = problem.stream(val.queries.embeddings, 1, stop_above, start=passive_scores)
    low, high, ok = _with_passive(passive_top[val.qrows, 0], low, high, ok, s_x, g_x)
    return _most_covered_point(low[ok], high[ok])


def _reach_bounds(
    qrows: np.ndarray,
    n_val: int,
    low: np.ndarray,
    high: np.ndarray,
    ok: np.ndarray,
    s_x: np.ndarray,
    g_x: np.ndarray,
) -> np.ndarray:
    """``(n_val,)`` float32: the best score any answer reaches on its winning interval."""
    reach = np.where(g_x > 0, s_x - low * g_x, np.where(g_x < 0, s_x - high * g_x, s_x))
    reach[~ok] = -np.inf
    bound = np.full(n_val, -np.inf, dtype=np.float64)
    np.maximum.at(bound, qrows, reach)
    return bound.astype(np.float32)


def _with_passive(
    passive: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    ok: np.ndarray,
    s_x: np.ndarray,
    g_x: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect each pair's interval with the constraint of its query's best passive row.

    The passive rows act as one more row per query (score = best passive, G = 0); an
    interval is an intersection of constraints, so its constraint is folded in here.

    Args:
        passive: ``(n_pairs,)`` float32 best passive score of each pair's query.
        low: ``(n_pairs,)`` float64 left ends of the pairs' intervals.
        high: ``(n_pairs,)`` float64 right ends.
        ok: ``(n_pairs,)`` bool: the interval is not empty.
        s_x: ``(n_pairs,)`` ``S`` of each pair's answer.
        g_x: ``(n_pairs,)`` ``G`` of each pair's answer.
    """
    s_dif = passive - s_x.astype(np.float32)
    g_dif = -g_x.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha = s_dif / (g_dif + np.float32(_limits.SLOPE_EPS))
    low = np.where(g_dif > 0, np.maximum(low, alpha), low)
    high = np.where(g_dif < 0, np.minimum(high, alpha), high)
    ok = ok & ~((g_dif == 0) & (s_dif > 0)) & (high >= low)
    return low, high, ok


def _pair_intervals(val: _Validation, n_moved: int) -> tuple[np.ndarray, ...]:
    """NUDGE-M winning interval ``[low, high]`` of every validation pair, over active rows.

    Args:
        val: the validation queries; ``val.w`` holds the moving rows' ``-unit(g)``, so
            ``G = q.w`` (0 for the other rows).
        n_moved: the first ``n_moved`` active rows move.

    Returns:
        ``low``, ``high`` (float64), ``ok`` (non-empty), ``s_x``, ``g_x`` per pair.
    """
    n_active = val.v.shape[0]
    n_pairs = val.qrows.size
    low_all = np.zeros(n_pairs)
    high_all = np.full(n_pairs, np.inf)
    ok_all = np.zeros(n_pairs, dtype=bool)
    s_all = np.zeros(n_pairs)
    g_all = np.zeros(n_pairs)
    pair_q, pair_col = val.qrows, val.cols
    for blk in val.query_blocks(n_active):
        s, t = val.block_scores(blk)
        b = s.shape[0]
        gg = t
        if n_moved < n_active:  # rows that cannot move: G = 0
            gg = np.zeros(s.shape, dtype=np.float32)
            gg[:, :n_moved] = t

        # Pareto front per query. Front points lie in the box between the best-S point and
        # the lowest-G point (anything outside is dominated by one of the two), so only the
        # box is sorted: by S descending, keeping points with G below every point before.
        rows = np.arange(b)
        g_hi = gg[rows, np.argmax(s, axis=1)]
        s_lo = s[rows, np.argmin(gg, axis=1)]
        box = (s >= s_lo[:, None]) & (gg <= g_hi[:, None])
        box_s, box_g = _pack_rows(box, (s, -np.inf), (gg, np.inf))
        order = np.argsort(-box_s, axis=1)
        s_sorted = np.take_along_axis(box_s, order, axis=1)
        g_sorted = np.take_along_axis(box_g, order, axis=1)
        run_min = np.minimum.accumulate(g_sorted, axis=1)
        keep = np.empty_like(g_sorted, dtype=bool)
        keep[:, 0] = True
        np.less(g_sorted[:, 1:], run_min[:, :-1], out=keep[:, 1:])
        keep &= np.isfinite(s_sorted)
        front_s, front_g = _pack_rows(keep, (s_sorted, np.nan), (g_sorted, np.nan))

        lo, hi = np.searchsorted(pair_q, [blk.start, blk.stop])
        pq = pair_q[lo:hi] - blk.start
        pc = pair_col[lo:hi]
        s_x = s[pq, pc][:, None]
        g_x = gg[pq, pc][:, None]
        s_dif = front_s[pq] - s_x
        g_dif = front_g[pq] - g_x
        with np.errstate(divide="ignore", invalid="ignore"):
            # The reference's 1e-8 guard, kept so that gamma matches nudge-ft exactly.
            alpha = s_dif / (g_dif + np.float32(_limits.SLOPE_EPS))
        pos = g_dif > 0
        neg = g_dif < 0
        low = np.maximum(np.where(pos, alpha, -np.inf).max(axis=1), 0.0)
        high = np.where(neg, alpha, np.inf).min(axis=1)
        blocked = ((g_dif == 0) & (s_dif > 0)).any(axis=1)
        low_all[lo:hi], high_all[lo:hi] = low, high
        ok_all[lo:hi] = ~blocked & (high >= low)
        s_all[lo:hi], g_all[lo:hi] = s_x[:, 0], g_x[:, 0]
    return low_all, high_all, ok_all, s_all, g_all


def _pack_rows(mask: np.ndarray, *arrays_and_fill: tuple[np.ndarray, float]) -> list[np.ndarray]:
    """Pack the masked entries of each row to the left of a ``(b, width)`` array.

    Args:
        mask: ``(b, n)`` bool.
        arrays_and_fill: ``(array, fill)`` pairs of ``(b, n)`` arrays and the pad value.

    Returns:
        One ``(b, width)`` array per input, ``width`` the largest row count.
    """
    r, c = np.nonzero(mask)
    counts = np.bincount(r, minlength=mask.shape[0])
    width = int(counts.max()) if counts.size else 0
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(r.size) - starts[r]
    out = []
    for arr, fill in arrays_and_fill:
        packed = np.full((mask.shape[0], max(width, 1)), fill, dtype=arr.dtype)
        packed[r, slot] = arr[r, c]
        out.append(packed)
    return out


def _most_covered_point(lows: np.ndarray, highs: np.ndarray) -> tuple[float, int]:
    """The left end of the point covered by most closed intervals ``[lows[i], highs[i]]``.

    Matches the reference's sweep: events sorted by value (starts before ends at equal
    value), counts taken after each group of equal values, the first maximum wins; no
    interval (or a best count of 0) gives 0.
    """
    if lows.size == 0:
        return 0.0, 0
    values = np.concatenate([lows, highs]).astype(np.float64)
    signs = np.concatenate([np.ones(lows.size, np.int64), -np.ones(highs.size, np.int64)])
    order = np.lexsort((-signs, values))
    values, signs = values[order], signs[order]
    running = np.cumsum(signs)
    group_end = np.append(values[1:] != values[:-1], True)
    ends = np.flatnonzero(group_end)
    at_end = running[ends]
    best = int(np.argmax(at_end))
    if at_end[best] <= 0:
        return 0.0, 0
    return float(values[ends[best]]), int(at_end[best])
