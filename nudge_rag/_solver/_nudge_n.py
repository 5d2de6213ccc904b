"""NUDGE-N: each answer row moves on the unit sphere toward the sum of its training queries.

``v'_j = (1 - gamma/2) v_j + sqrt(gamma (4 - gamma))/2 * unit(g_j - (g_j.v_j) v_j)``, or
``unit(g_j)`` once that lies inside the ball (``v_j.unit(g_j) >= 1 - gamma/2``); rows with
``g_j.v_j < 0`` do not move. This is the reference's closed form rewritten so that it does not
take ``sqrt(|g|^2 - (g.v)^2)`` of a float32 cancellation (which made NaN rows there).

Gamma is searched on a grid (:data:`DEFAULT_GAMMAS`). Only the (query, row) pairs that can be
top-1 somewhere on the grid are scored per gamma: a row moves on the unit circle through
``v`` and ``u = unit(g - (g.v) v)`` (its *arc*, :class:`_Arc`), so ``R = |(q.v, q.u)|``
bounds its score from above, and its score at either end of the grid bounds it from below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import numpy as np

from nudge_rag._queryset import QuerySet
from nudge_rag._solver import _limits
from nudge_rag._solver._base import (
    CV_MAX_QUERIES,
    DEFAULT_FOLDS,
    DEFAULT_REPEATS,
    _Curve,
    _NudgeBase,
    cv_choice,
)
from nudge_rag._solver._cv import _Folds, _SharedScores, iter_folds
from nudge_rag._solver._problem import _Problem, _Sums
from nudge_rag._solver._progress import progress_bar
from nudge_rag._solver._scoring import BlockHits, _val_recall, _Validation
from nudge_rag._validation import check_gamma, check_positive_int

__all__ = ["NudgeN", "DEFAULT_GAMMAS"]

#: The reference's NUDGE-N grid: 0, 0.02, ..., 0.48 (computed as in ``nudge-ft``).
DEFAULT_GAMMAS: tuple[float, ...] = tuple(0.02 * x for x in range(25))


class NudgeN(_NudgeBase):
    """NUDGE-N: tuned embeddings stay unit-norm; use with cosine stores.

    Each document that answers training queries moves on the unit sphere toward the sum of
    those queries, by at most ``sqrt(gamma)`` in Euclidean distance (``gamma <= 2``).

    Args:
        gamma: a fixed step size; ``None`` (default) picks it from ``gammas`` on validation.
        gammas: candidate values searched when ``gamma`` is ``None``; default
            :data:`DEFAULT_GAMMAS`, the reference's ``0, 0.02, ..., 0.48``. On ``val``, ties
            go to the smaller value.
        val_k: validation picks the gamma with the best recall@``val_k``.
        cv: folds of the cross-validation that chooses gamma when ``val`` is not given
            (default 10; seeded by ``random_state``): each fold's queries are scored against
            the documents tuned on all the other training queries, gamma is the largest
            candidate whose mean score over all held-out queries is within half a standard
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
        val_score_: validation recall@``val_k`` at ``gamma_`` (``None`` without validation).
        changed_rows_: ``(n_changed,)`` int64 rows that moved.
        changed_embeddings_: ``(n_changed, dim)`` float32 new vectors of those rows.
        embeddings_: ``(n_docs, dim)`` float32, all rows (built on access).
        gamma_scores_: ``{gamma: validation score}`` for every candidate searched.
        gamma_chosen_by_: how gamma was set: ``"cv"`` (cross-validation), ``"val"``
            (``val``, or the ``val_fraction`` split) or ``"fixed"`` (``gamma``).
        n_folds_: folds used (0 unless ``"cv"``).
        n_cv_repeats_: repetitions of the K-fold deal (0 unless ``"cv"``).
        n_train_queries_: queries the final fit used.
        n_val_queries_: queries gamma was chosen on (held out over all folds for ``"cv"``).
        cv_gammas_: ``(n_candidates,)`` float64 candidates, increasing (``None`` unless
            ``"cv"``).
        cv_scores_: ``(n_candidates,)`` mean validation recall@``val_k`` of each over all
            held-out queries.
        cv_std_: ``(n_candidates,)`` standard deviation of the per-fold scores.
        cv_fold_scores_: ``(n_folds * n_cv_repeats_, n_candidates)`` each fold's score.

    Example:
        >>> train = QuerySet(train_q, train_answers)  # doctest: +SKIP
        >>> solver = NudgeN().fit(doc_embeddings, train)  # doctest: +SKIP
        >>> solver.gamma_chosen_by_, solver.n_folds_  # doctest: +SKIP
        ('cv', 10)
        >>> solver.similarity
        'cosine'
    """

    similarity: ClassVar[str] = "cosine"

    def __init__(
        self,
        *,
        gamma: float | None = None,
        gammas: Sequence[float] | None = None,
        val_k: int = 1,
        cv: int | None = DEFAULT_FOLDS,
        cv_max_queries: int | None = CV_MAX_QUERIES,
        cv_repeats: int = DEFAULT_REPEATS,
        refit_on_val: bool = False,
        val_fraction: float = 0.1,
        random_state: int | None = 0,
        batch_size: int = 4096,
        show_progress: bool = False,
    ):
        super().__init__(
            gamma=gamma,
            cv=cv,
            cv_max_queries=cv_max_queries,
            cv_repeats=cv_repeats,
            refit_on_val=refit_on_val,
            val_fraction=val_fraction,
            random_state=random_state,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        self.gammas = gammas
        self.val_k = val_k

    def _val_k(self) -> int:
        return check_positive_int(self.val_k, "val_k")

    def _gamma_upper(self) -> float:
        return 2.0

    def _candidates(self) -> list[float]:
        if self.gammas is None:
            return list(DEFAULT_GAMMAS)
        try:
            values = [check_gamma(g, "gammas[i]", upper=2.0) for g in self.gammas]
        except TypeError as err:
            msg = f"gammas must be a sequence of numbers in [0, 2], got {self.gammas!r}"
            raise TypeError(msg) from err
        if not values:
            msg = "gammas must hold at least one candidate value, got an empty sequence"
            raise ValueError(msg)
        return values

    def _start_fit(self) -> None:
        self.gamma_scores_: dict[float, float] = {}

    def _search(
        self,
        problem: _Problem,
        val: QuerySet,
        passive_scores: np.ndarray | None,
        fixed: float | None,
    ) -> tuple[float, float]:
        n_tr = problem.n_train_rows
        candidates = [fixed] if fixed is not None else self._candidates()
        path = _Path(problem.v[:n_tr], problem.sums, candidates)
        view = _Validation(val, problem.val_cols, problem.v, problem.sums.g)
        k = self._val_k()
        bounds = _answer_bounds(view, n_tr, path.arc)
        passive_top = problem.stream(val.embeddings, k, bounds, start=passive_scores)
        scores = _val_recall(view, passive_top, n_tr, path.coeffs, path.block_hits(k))
        scores = scores / val.n_queries
        best = int(np.argmax(scores))  # first maximum: the smallest gamma among ties
        self.gamma_scores_ = dict(zip(candidates, scores.tolist()))
        return candidates[best], float(scores[best])

    def _search_cv(
        self, problem: _Problem, folds: _Folds, passive_scores: np.ndarray | None
    ) -> tuple[float, float, _Curve]:
        n_tr = problem.n_train_rows
        candidates = self._candidates()
        k = self._val_k()
        v = problem.v[:n_tr]
        # Pass 1 (large corpora only): each fold's bound on its queries' best answer score,
        # so that the one streaming pass over the passive rows (shared by all folds) can stop
        # scoring queries that cannot win.
        stop_above = None
        if problem.n_passive * folds.n_held > _limits.EARLY_STOP_SCORES:
            # A query held out in several repetitions: the largest of its folds' bounds.
            stop_above = np.full(folds.n_held, -np.inf, dtype=np.float32)
            for fold in iter_folds(problem, folds):
                arc = _Path(v, fold.sums, candidates).arc
                view = fold.validation(problem, fold.sums.g)
                bound = _answer_bounds(view, n_tr, arc, pairwise=True)
                np.maximum(stop_above[fold.positions], bound, out=bound)
                stop_above[fold.positions] = bound
        queries = problem.train.embeddings[folds.held]
        passive_top = problem.stream(queries, k, stop_above, start=passive_scores)
        # Pass 2: each fold's validation curve.
        shared = _SharedScores(problem, folds) if _SharedScores.usable(problem, folds) else None
        hits = np.zeros((folds.n_splits, len(candidates)))
        with progress_bar(
            folds.n_splits, "nudge-rag: cross-validation folds", problem.show_progress, "fold"
        ) as bar:
            for fold in iter_folds(problem, folds):
                path = _Path(v, fold.sums, candidates)
                view = fold.validation(problem, fold.sums.g)
                if shared is not None:
                    view.preset(*shared.scores(problem, fold))
                top = passive_top[fold.positions]
                hits[fold.index] = _val_recall(view, top, n_tr, path.coeffs, path.block_hits(k))
                bar.update()
        curve = _pooled_curve(candidates, hits, folds.sizes)
        best = cv_choice(curve.gammas, curve.scores, curve.fold_scores, folds.n_folds)
        self.gamma_scores_ = dict(zip(curve.gammas.tolist(), curve.scores.tolist()))
        return float(curve.gammas[best]), float(curve.scores[best]), curve

    def _apply(
        self, problem: _Problem, gamma: float, dense: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n_tr = problem.n_train_rows
        path = _Path(problem.v[:n_tr], problem.sums, [gamma])
        moved = np.flatnonzero(path.moves)
        if gamma == 0 or moved.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, problem.dim), dtype=np.float32)
        alphas, betas = path.coeffs
        new = problem.moved_vectors(problem.sums.g, moved, alphas[:, 0], betas[:, 0], dense)
        return problem.active[moved], new


def _pooled_curve(candidates: Sequence[float], hits: np.ndarray, sizes: list[int]) -> _Curve:
    """The curve of per-fold hit sums ``hits`` (``(n_folds, n_candidates)``), pooled.

    The pooled score is the mean over all held-out queries (each fold weighted by its size;
    folds differ by at most one query), so that it is exact for NUDGE-M's combined sweep too.
    """
    n = np.asarray(sizes, dtype=np.float64)
    fold_scores = hits / n[:, None]
    order = np.argsort(np.asarray(candidates, dtype=np.float64), kind="stable")
    return _Curve(
        np.asarray(candidates, dtype=np.float64)[order],
        (hits.sum(axis=0) / n.sum())[order],
        fold_scores.std(axis=0)[order],
        fold_scores[:, order],
    )


class _Arc(NamedTuple):
    """Where each NUDGE-N row can go on the grid, per training-answer row.

    A row moves on the unit circle through ``v`` and ``u = unit(g - (g.v) v)``: a query
    scores it ``S cos(theta) + P sin(theta)`` with ``S = q.v``, ``P = q.u =
    T inv_p - S c_over_p`` (``T = q.g``), ``theta`` growing with gamma from 0 to ``theta``
    here, where its coefficients are ``alpha``, ``beta`` (score ``alpha S + beta T``).
    """

    alpha: np.ndarray
    beta: np.ndarray
    theta: np.ndarray
    inv_p: np.ndarray
    c_over_p: np.ndarray


class _Path:
    """Every row's coefficients over the gamma grid, and the arc that bounds them.

    A moved row is ``a v + b u`` on the unit circle through ``v`` and ``unit(g)``, with
    ``u = (g - c v) / p``: in the ``(v, g)`` basis, ``alpha v + beta g`` with
    ``alpha = a - b c / p`` and ``beta = b / p``, so a validation query scores
    ``alpha S + beta T`` (``S = q.v``, ``T = q.g``). A row that has reached ``unit(g)`` stays
    there (``alpha = 0``, ``beta = 1 / |g|``); rows that do not move keep ``alpha = 1``,
    ``beta = 0``.

    Args:
        v: ``(n_rows, dim)`` float32 unit rows that may move.
        sums: their training sums.
        candidates: the gamma grid.

    Attributes:
        moves: ``(n_rows,)`` bool: rows that move at any gamma > 0.
        coeffs: ``(alpha, beta)``, ``(n_rows, n_gamma)`` float32 each.
        arc: the rows' arcs up to the largest gamma.
    """

    def __init__(self, v: np.ndarray, sums: _Sums, candidates: Sequence[float]):
        geo = _geometry(v, sums)
        self.moves = geo["moves"]
        inv_p, c_over_p, full = geo["inv_p"], geo["c_over_p"], geo["gamma_full"]
        gam = np.asarray(candidates, dtype=np.float64)
        a, b = (np.asarray(x, dtype=np.float32) for x in zip(*map(_step, candidates)))
        snap = gam[None, :] >= full[:, None]  # (n_tr, n_gamma); rows that do not move: all
        with np.errstate(divide="ignore"):
            inv_g = np.where(self.moves, 1.0 / sums.norm, 0.0).astype(np.float32)
        stay = (~self.moves).astype(np.float32)  # alpha once snapped: 0 (at g), 1 (never moved)
        alphas = np.where(snap, stay[:, None], a[None, :] - b[None, :] * c_over_p[:, None])
        betas = np.where(snap, inv_g[:, None], b[None, :] * inv_p[:, None])
        self.coeffs = (alphas, betas)
        # Coefficients at the largest gamma, and the angle each row has travelled by then
        # (phi where it snaps to g): they bound every row's score over the whole grid.
        top = int(np.argmax(gam))
        theta_top = np.where(
            snap[:, top], geo["phi"], np.float32(math.atan2(b[top], a[top]))
        ).astype(np.float32)
        self.arc = _Arc(alphas[:, top].copy(), betas[:, top].copy(), theta_top, inv_p, c_over_p)

    def block_hits(self, k: int) -> BlockHits | None:
        """The pruned hit@1 count per query block (``None`` for recall@k, ``k > 1``)."""
        if k != 1:
            return None
        coeffs, arc = self.coeffs, self.arc

        def hits(
            s: np.ndarray,
            t: np.ndarray,
            flat_answers: np.ndarray,
            best_non_static: np.ndarray,
            best_ans_static: np.ndarray,
        ) -> np.ndarray:
            best_static = np.maximum(best_non_static, best_ans_static)
            return _pruned_hits(
                s, t, flat_answers, coeffs, arc, best_non_static, best_ans_static, best_static
            )

        return hits


def _step(gamma: float) -> tuple[float, float]:
    """``(a, b)``: a row at gamma is ``a v + b u`` (until it snaps to ``unit(g)``)."""
    return 1.0 - gamma / 2.0, math.sqrt(max(gamma * (4.0 - gamma), 0.0)) / 2.0


def _geometry(v: np.ndarray, sums: _Sums) -> dict[str, np.ndarray]:
    """Per training-answer row: where it moves, and the circle it moves on.

    With ``c = g.v``, ``p = |g - c v|`` and ``u = (g - c v) / p``, a row moves on the unit
    circle through ``v`` and ``u``; ``phi`` is the angle from ``v`` to ``g``, so
    ``unit(g) = cos(phi) v + sin(phi) u``, reached at ``gamma_full``. Rows that do not move
    get ``phi = 0`` and ``gamma_full = 0``: "snapped" to ``v``.

    Args:
        v: ``(n_rows, dim)`` float32 unit rows.
        sums: their training sums.

    Returns:
        ``(n_rows,)`` arrays: ``moves``, ``phi``, ``gamma_full``, ``inv_p`` and
        ``c_over_p`` (0 where the row does not move), so that
        ``q.u = (q.g) inv_p - (q.v) c_over_p``.
    """
    g, c = sums.g, sums.dot_v
    # |g - c v| = sqrt(|g|^2 - c^2) (|v| = 1); where that difference cancels in float32
    # (g nearly parallel to v) it is recomputed from the vector itself.
    gn = sums.norm.astype(np.float64)
    c64 = c.astype(np.float64)
    p2 = gn * gn - c64 * c64
    p = np.sqrt(np.maximum(p2, 0.0))
    risky = np.flatnonzero(p2 <= 1e-3 * gn * gn)
    step = max(1, _limits.BLOCK_ELEMENTS // max(v.shape[1], 1))
    for s0 in range(0, risky.size, step):
        rows = risky[s0 : s0 + step]
        p[rows] = np.linalg.norm(g[rows] - c[rows, None] * v[rows], axis=1)
    # g (numerically) parallel to v: the optimum is v itself (float32 "perp" is noise)
    moves = (c >= 0) & (p > 1e-6 * gn)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_phi = np.where(moves, c64 / gn, 1.0)
        sin_phi = np.where(moves, p / gn, 0.0)
        inv_p = np.where(moves, 1.0 / p, 0.0)
        c_over_p = np.where(moves, c64 / p, 0.0)
    f32 = np.float32
    return {
        "moves": moves,
        "phi": np.arctan2(sin_phi, cos_phi).astype(f32),
        "gamma_full": np.where(moves, 2.0 * (1.0 - cos_phi.astype(f32)), 0.0),
        "inv_p": inv_p.astype(f32),
        "c_over_p": c_over_p.astype(f32),
    }


def _answer_bounds(val: _Validation, n_moved: int, arc: _Arc, pairwise: bool = False) -> np.ndarray:
    """``(n_val,)``: a bound on the best score any answer of each query reaches.

    A moved answer scores at most its :func:`_arc_reach`; one that does not move keeps
    ``S``. A query whose best passive score beats this is a miss at every gamma, so the
    streaming pass can stop scoring it.

    Args:
        val: the validation queries.
        n_moved: the first ``n_moved`` active rows can move.
        arc: the rows' arcs.
        pairwise: compute the pairs' scores one by one, never as a whole score block (for
            a view that is scored later, elsewhere); the bound then has slack for all pairs.
    """
    s, t = val.pair_scores(pairwise)
    cols = val.cols
    bound = s.astype(np.float32, copy=True)
    if pairwise:  # other BLAS kernels score them later: allow for their rounding
        bound += np.float32(_limits.BOUND_SLACK)
    moved = cols < n_moved
    if moved.any():
        reach = _arc_reach(arc, s[moved], t[moved], cols[moved])
        bound[moved] = reach + np.float32(_limits.BOUND_SLACK)
    out = np.full(val.n_queries, -np.inf, dtype=np.float32)
    np.maximum.at(out, val.qrows, bound)
    return out


def _perp(
    arc: _Arc,
    s: np.ndarray,
    t: np.ndarray,
    cols: np.ndarray | slice,
    out: np.ndarray | None = None,
    tmp: np.ndarray | None = None,
) -> np.ndarray:
    """``P = q.u`` from ``S`` and ``T``.

    The values are ``(m,)`` at rows ``cols`` (an int array), or a ``(b, m)`` block whose
    columns are the rows ``cols`` (a slice); ``out``/``tmp`` are optional float32 arrays
    like ``t``.
    """
    out = np.multiply(t, arc.inv_p[cols], out=out)
    out -= np.multiply(s, arc.c_over_p[cols], out=tmp)
    return out


def _arc_reach(arc: _Arc, s: np.ndarray, t: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The best score each (query, row) pair reaches anywhere on the row's arc.

    ``R cos(theta - psi)`` over ``theta`` in ``[0, theta_top]`` (``R = |(S, P)|``, ``psi``
    its angle) peaks at ``R`` when ``psi`` lies in that range, else at the nearer end.
    """
    p = _perp(arc, s, t, cols)
    psi = np.arctan2(p, s)
    end = arc.alpha[cols] * s + arc.beta[cols] * t
    inside = (psi >= 0) & (psi <= arc.theta[cols])
    return np.where(inside, np.hypot(s, p), np.maximum(s, end))


def _pruned_hits(
    s: np.ndarray,
    t: np.ndarray,
    flat_answers: np.ndarray,
    coeffs: tuple[np.ndarray, np.ndarray],
    arc: _Arc,
    best_non_static: np.ndarray,
    best_ans_static: np.ndarray,
    best_static: np.ndarray,
) -> np.ndarray:
    """Validation hit@1 counts per gamma for one query block of NUDGE-N, scoring few pairs.

    Row ``j`` scores ``S cos(theta) + P sin(theta) = R cos(theta - psi)`` with
    ``S = q.v``, ``P = q.u``, ``R = sqrt(S^2 + P^2)`` and ``theta`` growing with gamma from
    0 to ``theta_top`` (clipped where the row snaps to ``unit(g)``). So ``R`` bounds it from
    above (exactly: ``R`` if ``psi`` lies in the range, else the better end), and for
    ``S >= 0`` its smallest value is at an end of the range: ``min(S, score at the largest
    gamma)``. A row whose upper bound is below the best of the rows' lower bounds is never
    top-1 for that query. Scores themselves are computed in the ``(S, T)`` basis, exactly as
    for an unpruned search.

    Args:
        s: ``(b, n_moved)`` ``q.v``.
        t: ``(b, n_moved)`` ``T = q.g``.
        flat_answers: flat positions ``i * n_moved + j`` of (query, answer) pairs among them.
        coeffs: ``(alpha, beta)``, ``(n_moved, n_gamma)`` each: at gamma ``c`` row ``j``
            scores ``s[:, j] * alpha[j, c] + t[:, j] * beta[j, c]``.
        arc: the rows' arcs.
        best_non_static: ``(b,)`` best scores of non-answer rows that do not move.
        best_ans_static: ``(b,)`` best scores of answer rows that do not move.
        best_static: ``(b,)`` the larger of the two.

    Returns:
        ``(n_gamma,)`` hit counts.
    """
    alpha_max, beta_max = arc.alpha, arc.beta
    b, n = s.shape
    alphas, betas = coeffs
    hits = np.zeros(alphas.shape[1], dtype=np.float64)
    if n == 0:
        hits += np.count_nonzero(best_ans_static > best_non_static)
        return hits
    slack = _limits.BOUND_SLACK

    def floor(r: np.ndarray, c: np.ndarray) -> np.ndarray:  # min(S, score at the largest gamma)
        s_rc = s[r, c]
        return np.minimum(s_rc, alpha_max[c] * s_rc + beta_max[c] * t[r, c])

    # A few queries at a time (so that their S and T stay in cache for every pass):
    # 1. a lower bound of each query's top-1 score at every gamma: the best floor among the
    #    rows whose S is near the query's best S (any set of rows gives a valid bound; these
    #    almost always hold the best floor). Floors of rows with S < 0 are below 0: they can
    #    only give a non-positive bound, which prunes nothing.
    # 2. the rows whose upper bound R (R^2 = S^2 + P^2) reaches it.
    lower = best_static.astype(np.float32, copy=True)
    cand = np.empty((b, n), dtype=bool)
    chunk = max(1, _limits.CACHE_ELEMENTS // n)
    buf_p = np.empty((min(chunk, b), n), dtype=np.float32)
    buf_s = np.empty_like(buf_p)
    every = slice(0, n)
    for r0 in range(0, b, chunk):
        r1 = min(r0 + chunk, b)
        sc, low, mask = s[r0:r1], lower[r0:r1], cand[r0:r1]
        near = sc.max(axis=1) - np.float32(_limits.NEAR_BEST)
        np.greater_equal(sc, near[:, None], out=mask)
        r, c = np.divmod(np.flatnonzero(mask), n)  # (2-D np.nonzero is several times slower)
        np.maximum.at(low, r, floor(r + r0, c))
        low_sq = np.where(low > slack, (low - slack) ** 2, -1.0).astype(np.float32)
        upper_sq = _perp(arc, sc, t[r0:r1], every, out=buf_p[: r1 - r0], tmp=buf_s[: r1 - r0])
        np.multiply(upper_sq, upper_sq, out=upper_sq)
        upper_sq += np.multiply(sc, sc, out=buf_s[: r1 - r0])
        np.greater_equal(upper_sq, low_sq[:, None], out=mask)
    keys = np.flatnonzero(cand)  # = row * n + col, in row-major order
    rows, cols = np.divmod(keys, n)
    # The exact bound on the survivors.
    s_c, t_c = s[rows, cols], t[rows, cols]
    upper = _arc_reach(arc, s_c, t_c, cols)
    keep = np.flatnonzero(upper >= lower[rows] - slack)
    keys, rows, cols, s_c, t_c = keys[keep], rows[keep], cols[keep], s_c[keep], t_c[keep]
    answers = np.sort(flat_answers)
    pos = np.searchsorted(answers, keys)
    is_ans = pos < answers.size
    is_ans[is_ans] = answers[pos[is_ans]] == keys[is_ans]
    order = np.lexsort((rows, is_ans))
    rows, cols, is_ans = rows[order], cols[order], is_ans[order]
    s_c, t_c = s_c[order], t_c[order]
    # Segments of equal (is_ans, row): reduceat over each.
    seg_start = np.flatnonzero(
        np.concatenate(([rows.size > 0], (rows[1:] != rows[:-1]) | (is_ans[1:] != is_ans[:-1])))
    )
    seg_rows, seg_ans = rows[seg_start], is_ans[seg_start]
    ans_rows, non_rows = seg_rows[seg_ans], seg_rows[~seg_ans]
    step = max(1, _limits.BLOCK_ELEMENTS // max(s_c.size, 1))  # gammas scored together
    for g0 in range(0, hits.size, step):
        gs = slice(g0, g0 + step)
        sc = alphas[cols, gs] * s_c[:, None]  # (n_cand, n_g): whole rows gathered
        sc += betas[cols, gs] * t_c[:, None]
        n_g = sc.shape[1]
        best_ans = np.repeat(best_ans_static[:, None], n_g, axis=1)  # (b, n_g)
        best_non = np.repeat(best_non_static[:, None], n_g, axis=1)
        if sc.shape[0]:
            seg_max = np.maximum.reduceat(sc, seg_start, axis=0)  # (n_seg, n_g)
            best_ans[ans_rows] = np.maximum(best_ans[ans_rows], seg_max[seg_ans])
            best_non[non_rows] = np.maximum(best_non[non_rows], seg_max[~seg_ans])
        hits[gs] = np.count_nonzero(best_ans > best_non, axis=0)
    return hits
