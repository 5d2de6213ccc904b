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
from nudge_rag._solver._base import _Curve, _NudgeBase, cv_choice
from nudge_rag._solver._cv import _Folds, _SharedScores, iter_folds
from nudge_rag._solver._problem import _Problem, _Sums
from nudge_rag._solver._progress import progress_bar
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
        cv: folds of the cross-validation that chooses gamma when ``val`` is not given
            (default 10; seeded by ``random_state``): each fold's winning intervals are found
            against the documents tuned on all the other training queries and all folds'
            intervals are swept once (exact), gamma is the largest
            gamma whose mean score over all held-out queries is within half a standard
            error of the best (0 stays 0: never worse than untuned on validation), and the
            final fit uses every training query. ``None`` holds out ``val_fraction`` of the
            queries once instead (cheaper, noisier; the final fit then uses the rest).
        cv_max_queries: at most this many training queries are held out over all folds
            (default 10,000, as the paper caps validation; a seeded random subset, the others
            always train), so that choosing gamma costs no more at a million queries than
            at ten thousand; ``None`` holds out every query. The final fit still uses all.
        cv_repeats: the K-fold deal is repeated up to this many times (default 3), each
            time with a new seeded deal of the same queries, and the curves of all
            repetitions are pooled before gamma is chosen: gamma then depends much less on
            how one deal fell. Only as many repetitions run as keep the held-out queries
            scored in all within ``cv_max_queries`` (1,702 queries: 3; 4,000: 2; 10,000: 1).
        refit_on_val: after choosing gamma on ``val`` (or on the ``val_fraction`` split when
            ``cv=None``), fit again on train and val together with that gamma, so that every
            labelled pair moves documents. Use it when the validation pairs are the same kind
            as the training pairs and nothing else will be measured on them; keep the default
            when ``val`` is a held-out set you report on, or to reproduce the paper's protocol.
        val_fraction: with ``cv=None`` and no ``val``, the share of training queries split off
            (seeded by ``random_state``).
        random_state: seed for the folds (or that split).
        batch_size: documents per block in the streaming pass over the corpus.
        show_progress: show tqdm progress bars over the streaming pass over the documents
            that answer no query (needs ``tqdm``; without it a warning is logged).

    Attributes:
        gamma_: the step size used.
        val_score_: validation hit@1 at ``gamma_`` (``None`` without validation).
        changed_rows_: ``(n_changed,)`` int64 rows that moved.
        changed_embeddings_: ``(n_changed, dim)`` float32 new vectors (not unit-norm).
        embeddings_: ``(n_docs, dim)`` float32, all rows (built on access).
        gamma_chosen_by_: how gamma was set: ``"cv"`` (cross-validation), ``"val"``
            (``val``, or the ``val_fraction`` split) or ``"fixed"`` (``gamma``).
        n_folds_: folds used (0 unless ``"cv"``).
        n_cv_repeats_: repetitions of the K-fold deal (0 unless ``"cv"``).
        n_train_queries_: queries the final fit used.
        n_val_queries_: queries gamma was chosen on (held out over all folds for ``"cv"``).
        cv_gammas_: ``(41,)`` float64 gammas from 0 to ``2 * gamma_`` (``gamma_`` in the
            middle) where the curve is reported (``None`` unless ``"cv"``).
        cv_scores_: ``(41,)`` mean validation hit@1 there over all held-out queries.
        cv_std_: ``(41,)`` standard deviation of the per-fold scores.
        cv_fold_scores_: ``(n_folds * n_cv_repeats_, 41)`` each fold's score.
    """

    similarity: ClassVar[str] = "dot"

    def _gamma_upper(self) -> float:
        return 1e18  # the output has norm ~gamma: keep it far inside float32

    def _search(
        self,
        problem: _Problem,
        val: QuerySet,
        passive_scores: np.ndarray | None,
        fixed: float | None,
    ) -> tuple[float, float]:
        """Exact gamma on ``val``: the point covered by the most winning intervals.

        For query ``q`` a row scores ``S - gamma * G`` with ``S = q.v`` and
        ``G = -q.unit(g)`` (0 for rows that do not move, which collapse with the passive
        rows into their best score). Answer ``x`` wins on ``[low, high]`` where every other
        row ``y`` has ``S_y - S_x <= gamma (G_y - G_x)``. On large corpora the intervals are
        first found without the passive rows; a query whose best passive score then beats
        ``S_x - gamma G_x`` of every answer on its whole interval cannot win anywhere and
        stops being scored in the streaming pass.
        """
        n_moved = problem.n_train_rows
        _, w = _direction(problem.sums)
        view = _Validation(val, problem.val_cols, problem.v, w)
        if fixed is not None:
            passive_top = problem.stream(val.embeddings, 1, start=passive_scores)
            alpha = np.ones((n_moved, 1), dtype=np.float32)
            beta = np.full((n_moved, 1), -fixed, dtype=np.float32)
            hits = _val_recall(view, passive_top, n_moved, (alpha, beta))
            return fixed, float((hits / val.n_queries)[0])
        low, high, ok, s_x, g_x = _pair_intervals(view, n_moved)
        stop_above = None
        if problem.n_passive * val.n_queries > _limits.EARLY_STOP_SCORES:
            stop_above = _reach_bounds(view.qrows, val.n_queries, low, high, ok, s_x, g_x)
        passive_top = problem.stream(val.embeddings, 1, stop_above, start=passive_scores)
        low, high, ok = _with_passive(passive_top[view.qrows, 0], low, high, ok, s_x, g_x)
        gamma, count = _most_covered_point(low[ok], high[ok])
        # Closed intervals of two answers of one query can both cover gamma (ties).
        return gamma, min(count, val.n_queries) / val.n_queries

    def _search_cv(
        self, problem: _Problem, folds: _Folds, passive_scores: np.ndarray | None
    ) -> tuple[float, float, _Curve]:
        """Every fold's pair intervals, the passive rows folded in, one sweep over them all.

        The sweep's count at a gamma is the number of held-out queries (over all folds)
        whose answer wins top-1 there, so its maximum is the exact cross-validated gamma.
        """
        n_moved = problem.n_train_rows
        parts = []
        shared = _SharedScores(problem, folds) if _SharedScores.usable(problem, folds) else None
        with progress_bar(
            folds.n_splits, "nudge-rag: cross-validation folds", problem.show_progress, "fold"
        ) as bar:
            for fold in iter_folds(problem, folds):
                if shared is None:
                    view = fold.validation(problem, _direction(fold.sums)[1])
                else:  # T = q.w = -(q.g) / |g|, from the shared scores (w itself is not needed)
                    view = fold.validation(problem, fold.sums.g)
                    s_f, t_f = shared.scores(problem, fold)
                    norm = fold.sums.norm
                    scale = np.where(norm > 0, -1.0 / np.where(norm > 0, norm, 1.0), 0.0)
                    t_f *= scale.astype(np.float32)
                    view.preset(s_f, t_f)
                intervals = _pair_intervals(view, n_moved)
                of_pair = np.full(view.qrows.size, fold.index, dtype=np.int64)
                parts.append((fold.positions[view.qrows], of_pair, *intervals))
                del view
                bar.update()
        held_of_pair, fold_of_pair, low, high, ok, s_x, g_x = (
            np.concatenate(x) for x in zip(*parts)
        )
        del parts
        n_held = folds.n_held
        stop_above = None
        if problem.n_passive * n_held > _limits.EARLY_STOP_SCORES:
            stop_above = _reach_bounds(held_of_pair, n_held, low, high, ok, s_x, g_x)
        queries = problem.train.embeddings[folds.held]
        passive_top = problem.stream(queries, 1, stop_above, start=passive_scores)
        low, high, ok = _with_passive(passive_top[held_of_pair, 0], low, high, ok, s_x, g_x)
        low, high, fold = low[ok], high[ok], fold_of_pair[ok]
        sizes = folds.sizes
        n_scored = sum(sizes)  # each held-out query once per repetition
        gamma, score = 0.0, 0.0
        values, counts = _coverage(low, high)
        finite = np.isfinite(values)
        values, counts = values[finite], counts[finite]
        if values.size and counts.max() > 0:
            # Every stretch of the sweep, scored per fold: cv_choice picks one of them.
            fold_scores = _fold_scores(values, low, high, fold, sizes)
            scores = np.minimum(counts, n_scored) / n_scored
            best = cv_choice(values, scores, fold_scores, folds.n_folds)
            gamma, score = float(values[best]), float(scores[best])
        return gamma, score, _interval_curve(gamma, low, high, fold, sizes)

    def _apply(
        self, problem: _Problem, gamma: float, dense: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        moves, w = _direction(problem.sums)
        if gamma == 0 or not moves.any():
            return np.zeros(0, dtype=np.int64), np.zeros((0, problem.dim), dtype=np.float32)
        n_moved = problem.n_train_rows
        moved = np.flatnonzero(moves)
        ones = np.ones(n_moved, dtype=np.float32)
        beta = np.full(n_moved, -gamma, dtype=np.float32)
        return problem.active[moved], problem.moved_vectors(w, moved, ones, beta, dense)


#: Points of NUDGE-M's cross-validation curve (``cv_gammas_``): 0 to twice the chosen gamma.
CURVE_POINTS = 41


def _interval_curve(
    gamma: float, low: np.ndarray, high: np.ndarray, fold: np.ndarray, sizes: list[int]
) -> _Curve:
    """Per-fold hit@1 on a grid of gammas, from the winning intervals (as the sweep counts).

    The grid has :data:`CURVE_POINTS` points from 0 to ``2 * gamma`` with ``gamma`` itself in
    the middle (for ``gamma = 0``: up to twice the median positive interval start). A pair
    counts at ``x`` when ``low <= x < high``, which is the sweep's count.
    """
    upper = 2.0 * gamma
    if upper == 0:
        starts = low[np.isfinite(low) & (low > 0)]
        upper = 2.0 * float(np.median(starts)) if starts.size else 1.0
    grid = np.linspace(0.0, upper, CURVE_POINTS)
    grid[CURVE_POINTS // 2] = upper / 2
    fold_scores = _fold_scores(grid, low, high, fold, sizes)
    n = np.asarray(sizes, dtype=np.float64)
    pooled = (fold_scores * n[:, None]).sum(axis=0) / n.sum()
    return _Curve(grid, pooled, fold_scores.std(axis=0), fold_scores)


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
    values, counts = _coverage(lows, highs)
    best = int(np.argmax(counts))
    if counts[best] <= 0:
        return 0.0, 0
    return float(values[best]), int(counts[best])


def _coverage(lows: np.ndarray, highs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sweep's step function: ``counts[i]`` intervals cover ``[values[i], values[i + 1])``.

    ``values`` are the distinct interval ends, increasing (float64); ``counts`` (int64) is
    the count after each group of equal values, starts before ends, as the reference sweeps.
    """
    if lows.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    values = np.concatenate([lows, highs]).astype(np.float64)
    signs = np.concatenate([np.ones(lows.size, np.int64), -np.ones(highs.size, np.int64)])
    order = np.lexsort((-signs, values))
    values, signs = values[order], signs[order]
    running = np.cumsum(signs)
    ends = np.flatnonzero(np.append(values[1:] != values[:-1], True))
    return values[ends], running[ends]


def _fold_scores(
    points: np.ndarray, low: np.ndarray, high: np.ndarray, fold: np.ndarray, sizes: list[int]
) -> np.ndarray:
    """``(n_folds, n_points)`` hit@1 of each fold at ``points``, counted as the sweep counts.

    A pair counts at ``x`` when ``low <= x < high``.

    Args:
        points: ``(n_points,)`` gammas.
        low: ``(n_pairs,)`` left ends of the (non-empty) winning intervals.
        high: ``(n_pairs,)`` right ends.
        fold: ``(n_pairs,)`` the fold of each pair's query.
        sizes: queries per fold.
    """
    out = np.zeros((len(sizes), points.size))
    for f, n in enumerate(sizes):
        mine = fold == f
        lows, highs = np.sort(low[mine]), np.sort(high[mine])
        count = np.searchsorted(lows, points, side="right")
        count -= np.searchsorted(highs, points, side="right")
        out[f] = np.minimum(count, n) / n
    return out
