"""Cross-validation folds over the training queries, for gamma chosen without a ``val`` set.

The held-out queries (all training queries, or a seeded random ``max_queries`` of them) are
dealt into ``n_folds`` folds of near-equal size, ``n_repeats`` times over with a new seeded
deal each time (repeated K-fold: the curve then depends less on one deal of the queries).
Each fold is scored against the training sums of every other query
(:meth:`_Problem.sums_without`); documents that answer no training query never move in any
fold, so their best scores are streamed once for all held-out queries
(:meth:`_Problem.stream`) and shared by every fold of every repetition.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from nudge_rag._queryset import QuerySet
from nudge_rag._solver import _limits
from nudge_rag._solver._problem import _pair_positions, _Problem, _Sums
from nudge_rag._solver._scoring import _Validation


class _Folds:
    """Seeded, repeated K-fold assignment of (at most ``max_queries``) training queries.

    The first repetition's deal is the one plain K-fold with the same seed gives; each later
    repetition deals the same held-out queries again in a new seeded order. Every query is
    in exactly one fold per repetition, so over all ``n_splits`` folds each held-out query is
    scored ``n_repeats`` times.

    Args:
        n_queries: training queries.
        n_folds: folds wanted per repetition; fewer when fewer queries are held out (one
            query per fold).
        max_queries: at most this many queries are held out (a seeded random subset; the
            others are always training queries); ``None`` holds out every query.
        random_state: seed for ``np.random.default_rng``.
        n_repeats: how many deals.

    Attributes:
        held: ``(n_held,)`` int64 sorted rows of the held-out queries.
        members: per fold (repetition after repetition), its sorted query rows.
        positions: per fold, the positions of its queries in ``held``.
    """

    def __init__(
        self,
        n_queries: int,
        n_folds: int,
        max_queries: int | None,
        random_state: int | None,
        n_repeats: int = 1,
    ):
        rng = np.random.default_rng(random_state)
        order = rng.permutation(n_queries)
        if max_queries is not None and n_queries > max_queries:
            order = order[:max_queries]
        n_folds = min(n_folds, order.size)
        self.held = np.sort(order)
        self.n_repeats = n_repeats
        self._n_folds = n_folds
        self.members = []
        for r in range(n_repeats):
            deal = order if r == 0 else rng.permutation(order)
            self.members += [np.sort(deal[f::n_folds]) for f in range(n_folds)]
        self.positions = [np.searchsorted(self.held, rows) for rows in self.members]

    @property
    def n_folds(self) -> int:
        """Folds per repetition."""
        return self._n_folds

    @property
    def n_splits(self) -> int:
        """Folds over all repetitions (``n_folds * n_repeats``)."""
        return len(self.members)

    @property
    def n_held(self) -> int:
        """Number of held-out queries (each is scored once per repetition)."""
        return int(self.held.size)

    @property
    def sizes(self) -> list[int]:
        """Queries per fold, over all repetitions."""
        return [m.size for m in self.members]


class _Fold(NamedTuple):
    """One fold: its queries as validation queries, and the sums of all the others.

    Attributes:
        index: the fold number, over all repetitions (``0 .. n_splits - 1``).
        positions: positions of its queries among the held-out queries.
        queries: the fold's queries (a :class:`QuerySet` whose answers are document rows).
        cols: ``(queries.n_pairs,)`` int64 active position of each answer.
        sums: the training sums without the fold's queries.
    """

    index: int
    positions: np.ndarray
    queries: QuerySet
    cols: np.ndarray
    sums: _Sums

    def validation(self, problem: _Problem, w: np.ndarray) -> _Validation:
        """The fold's queries scored against ``problem``'s rows, ``w`` their second basis."""
        return _Validation(self.queries, self.cols, problem.v, w)


def iter_folds(problem: _Problem, folds: _Folds) -> Iterator[_Fold]:
    """Each fold of ``folds`` over ``problem.train``, built when it is reached.

    One fold's sums (a copy of ``problem.sums`` with the rows its queries answer summed
    again) are alive at a time.
    """
    train = problem.train
    for f, (rows, positions) in enumerate(zip(folds.members, folds.positions)):
        queries = train.subset(rows)
        cols = problem.train_cols[_pair_positions(train.indptr, rows)]
        yield _Fold(f, positions, queries, cols, problem.sums_without(rows))


#: Repeated folds share the held-out queries' scores when both ``(n_held, n_active)``
#: matrices together hold at most this many float32 elements (64 MB).
SHARED_SCORES = 1 << 24


class _SharedScores:
    """Every held-out query's scores, computed once and shared by the folds of every repetition.

    ``S = q.v`` does not depend on the fold. ``T = q.g_fold`` does, but only through the
    fold's own queries: ``g_fold = g - sum of the fold's queries on the rows they answer``,
    so ``T_fold = T - (Q_f Q_f^T) A_f`` with ``A_f`` the fold's (query, row) answer matrix:
    one small Gram matrix and one sparse product per fold instead of two dense matmuls.
    Rows left with no query get ``T = 0``; rows whose fold sum float32 loses (rescaled) are
    scored directly.

    Used only with repetitions (each query is then scored ``n_repeats`` times) and when the
    matrices fit :data:`SHARED_SCORES` and each fold is one score block.
    """

    def __init__(self, problem: _Problem, folds: _Folds):
        q = problem.train.embeddings[folds.held]
        self.s = q @ problem.v.T
        self.t = q @ problem.sums.g.T

    @staticmethod
    def usable(problem: _Problem, folds: _Folds) -> bool:
        """Whether sharing pays (repetitions) and fits (memory, one block per fold)."""
        n_active, n_tr = problem.v.shape[0], problem.n_train_rows
        return (
            folds.n_repeats > 1
            and folds.n_held * (n_active + n_tr) <= SHARED_SCORES
            and max(folds.sizes) * (n_active + 1) <= _limits.BLOCK_ELEMENTS
        )

    def scores(self, problem: _Problem, fold: _Fold) -> tuple[np.ndarray, np.ndarray]:
        """``(S, T)`` of the fold's queries: ``T = q.g`` with the fold's own sums."""
        queries = fold.queries
        q = queries.embeddings
        n_tr = problem.n_train_rows
        own = sp.csr_matrix(
            (np.ones(fold.cols.size, dtype=np.float32), fold.cols, queries.indptr),
            shape=(queries.n_queries, n_tr),
        )
        gram = q @ q.T
        t = self.t[fold.positions]
        t -= np.asarray((own.T @ gram).T, dtype=np.float32)
        t[:, fold.sums.norm == 0] = 0.0
        tiny = fold.sums.rescaled
        if tiny.size:
            t[:, tiny] = q @ fold.sums.g[tiny].T
        return self.s[fold.positions], t
