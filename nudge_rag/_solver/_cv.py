"""Cross-validation folds over the training queries, for gamma chosen without a ``val`` set.

The held-out queries (all training queries, or a seeded random ``max_queries`` of them) are
dealt into ``n_folds`` folds of near-equal size. Fold ``f`` is scored against the training
sums of every other query (:meth:`_Problem.sums_without`); documents that answer no training
query never move in any fold, so their best scores are streamed once for all held-out queries
(:meth:`_Problem.stream`) and shared by the folds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from nudge_rag._queryset import QuerySet
from nudge_rag._solver._problem import _pair_positions, _Problem, _Sums
from nudge_rag._solver._scoring import _Validation


class _Folds:
    """Seeded K-fold assignment of (at most ``max_queries``) training queries.

    Args:
        n_queries: training queries.
        n_folds: folds wanted; fewer when fewer queries are held out (one query per fold).
        max_queries: at most this many queries are held out (a seeded random subset; the
            others are always training queries); ``None`` holds out every query.
        random_state: seed for ``np.random.default_rng``.

    Attributes:
        held: ``(n_held,)`` int64 sorted rows of the held-out queries.
        members: per fold, its sorted query rows.
        positions: per fold, the positions of its queries in ``held``.
    """

    def __init__(
        self, n_queries: int, n_folds: int, max_queries: int | None, random_state: int | None
    ):
        order = np.random.default_rng(random_state).permutation(n_queries)
        if max_queries is not None and n_queries > max_queries:
            order = order[:max_queries]
        n_folds = min(n_folds, order.size)
        self.held = np.sort(order)
        self.members = [np.sort(order[f::n_folds]) for f in range(n_folds)]
        self.positions = [np.searchsorted(self.held, rows) for rows in self.members]

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return len(self.members)

    @property
    def n_held(self) -> int:
        """Number of held-out queries, over all folds."""
        return int(self.held.size)

    def of_query(self) -> np.ndarray:
        """``(n_held,)`` int64: the fold of each held-out query (in ``held`` order)."""
        out = np.empty(self.n_held, dtype=np.int64)
        for f, pos in enumerate(self.positions):
            out[pos] = f
        return out


class _Fold(NamedTuple):
    """One fold: its queries as validation queries, and the sums of all the others.

    Attributes:
        index: the fold number.
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
