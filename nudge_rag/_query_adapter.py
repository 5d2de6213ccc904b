"""A query-side adapter: a linear map of the query embeddings, fitted on the (tuned) store.

NUDGE moves documents toward the questions they answer; :class:`QueryAdapter` moves the
questions toward the documents. It fits, in closed form, a ridge regression from each
training question to the mean of its answer documents, regularised toward the identity::

    W = (Q^T Q + lambda I)^-1 (Q^T Y + lambda I)

(``Q`` the unit training questions, ``Y`` the mean of each one's unit answer documents),
then blends the mapped query with the original one, ``M = (1 - blend) I + blend W``, and
re-normalises: ``transform(q) = unit(unit(q) @ M)``. ``lambda`` and ``blend`` are chosen
together on validation queries by nDCG@10 over the documents given to ``fit``, or, without
validation queries, by K-fold cross-validation on the training queries.

When the documents were tuned on the training queries (NUDGE), a held-out query's answers
were moved toward it, so scoring it against those documents overstates every candidate:
``fit(..., fold_docs=...)`` takes a function that gives, for each fold, the documents as
they would be tuned without the held-out queries (the tuning flow re-applies NUDGE at the
chosen gamma on each fold's training queries, which costs one fixed-gamma fit per fold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from nudge_rag._metrics import evaluate
from nudge_rag._queryset import QuerySet
from nudge_rag._solver._base import NotFittedError, _as_queryset, _check_cv
from nudge_rag._solver._cv import _Folds
from nudge_rag._validation import check_matrix, check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BLENDS", "DEFAULT_LAMBDAS", "QueryAdapter"]

#: Ridge strengths toward the identity (larger: closer to leaving queries unchanged).
DEFAULT_LAMBDAS = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)

#: Weights of the mapped query in the blend with the original (0 would be the identity).
DEFAULT_BLENDS = (0.25, 0.5, 0.75, 1.0)

#: Folds of the cross-validation without ``val`` (gamma's default, ``NudgeN(cv=10)``).
DEFAULT_FOLDS = 10

#: Ranking depth of the validation score (nDCG@10).
VAL_K = 10

#: Score tiles of validation queries x documents hold at most this many float32 (64 MB).
_TILE_ELEMENTS = 1 << 24


class QueryAdapter:
    """A linear map of query embeddings toward the documents that answer them.

    Args:
        lambdas: candidate ridge strengths toward the identity (positive numbers).
        blends: candidate weights of the mapped query, in ``(0, 1]``.
        cv: folds of the cross-validation used when ``fit`` gets no ``val`` (the folds are
            the first deal of gamma's cross-validation with the same ``cv`` and seed).
        random_state: seed of the folds (the seed of gamma's folds gives the same folds).
        cv_max_queries: at most this many training queries are held out (as in gamma's
            cross-validation); ``None``: all.
        k: ranking depth of the validation nDCG.
        batch_size: queries per block in ``transform`` and in validation scoring.

    Attributes:
        matrix_: ``(dim, dim)`` float32 ``M``: ``transform(q) = unit(unit(q) @ M)``.
        lambda_: the chosen ridge strength.
        blend_: the chosen blend weight.
        val_score_: validation nDCG@k of the adapted queries at the choice (mean of folds'
            held-out queries after cross-validation).
        base_score_: the same score with the queries left unchanged (the documents alone).
        val_scores_: ``(len(lambdas), len(blends))`` float64 validation curve.
        chosen_by_: ``"val"`` or ``"cv"``.
        n_folds_: folds of the cross-validation (0 with ``val``).
        n_train_queries_, n_val_queries_: queries fitted on / scored.
        n_features_in_: the embedding dimension.

    Example:
        >>> import numpy as np
        >>> from nudge_rag import QueryAdapter, QuerySet
        >>> rng = np.random.default_rng(0)
        >>> docs = rng.normal(size=(50, 8)).astype(np.float32)
        >>> train = QuerySet(rng.normal(size=(40, 8)), [[i % 50] for i in range(40)])
        >>> adapter = QueryAdapter(cv=4).fit(docs, train)
        >>> adapter.transform(train.embeddings).shape
        (40, 8)
    """

    def __init__(
        self,
        *,
        lambdas: Sequence[float] = DEFAULT_LAMBDAS,
        blends: Sequence[float] = DEFAULT_BLENDS,
        cv: int = DEFAULT_FOLDS,
        random_state: int | None = 0,
        cv_max_queries: int | None = None,
        k: int = VAL_K,
        batch_size: int = 4096,
    ):
        self.lambdas = lambdas
        self.blends = blends
        self.cv = cv
        self.random_state = random_state
        self.cv_max_queries = cv_max_queries
        self.k = k
        self.batch_size = batch_size

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict[str, Any]:
        """The constructor's hyperparameters (scikit-learn convention)."""
        names = ("lambdas", "blends", "cv", "random_state", "cv_max_queries", "k", "batch_size")
        return {n: getattr(self, n) for n in names}

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        doc_embeddings: np.ndarray,
        train: QuerySet | Any,
        val: QuerySet | Any | None = None,
        *,
        fold_docs: Callable[[QuerySet], np.ndarray] | None = None,
    ) -> QueryAdapter:
        """Fit the map on ``train`` and choose ``lambda`` and ``blend``.

        Args:
            doc_embeddings: ``(n_docs, dim)`` float32 array: the documents as the store holds
                them (after NUDGE when used with it). Rows are normalised for the fit.
            train: training queries: a :class:`QuerySet` (or ``(embeddings, answers)``)
                whose answers are rows of ``doc_embeddings``.
            val: optional validation queries in the same form; without them the choice is
                cross-validated on ``train`` over ``cv`` folds.
            fold_docs: used only when cross-validating: given a fold's training queries
                (a :class:`QuerySet`), returns the ``(n_docs, dim)`` documents as they would
                be without the fold's held-out queries (e.g. NUDGE re-applied on them).
                Default: ``doc_embeddings`` for every fold, which is right only when the
                documents were not tuned on ``train``.

        Returns:
            self, fitted.

        Raises:
            ValueError: empty or mismatched inputs, bad grids, fewer than 2 training queries
                to cross-validate, or ``fold_docs`` returning the wrong shape.
        """
        lambdas = _check_grid(self.lambdas, "lambdas", low=0.0, high=None, low_open=True)
        blends = _check_grid(self.blends, "blends", low=0.0, high=1.0, low_open=True)
        k = check_positive_int(self.k, "k")
        check_positive_int(self.batch_size, "batch_size")
        docs = check_matrix(doc_embeddings, "doc_embeddings")
        n_docs, dim = docs.shape
        docs = _unit(docs)
        train_qs = _as_queryset(train, "train").checked(n_docs, dim, "train")
        val_qs = None if val is None else _as_queryset(val, "val").checked(n_docs, dim, "val")
        if val_qs is not None:
            scores, base = self._curve(docs, train_qs, val_qs, lambdas, blends, k)
            method, n_folds, n_scored = "val", 0, val_qs.n_queries
        else:
            n_folds = _check_cv(self.cv)
            if n_folds is None:
                msg = "cv must be a number of folds >= 2 when fit gets no val queries, got None"
                raise ValueError(msg)
            max_queries = (
                None
                if self.cv_max_queries is None
                else check_positive_int(self.cv_max_queries, "cv_max_queries")
            )
            folds = _Folds(train_qs.n_queries, n_folds, max_queries, self.random_state)
            if folds.n_folds < 2:
                msg = (
                    f"train has {train_qs.n_queries} query with answers: cross-validating the "
                    "adapter needs at least 2; pass val="
                )
                raise ValueError(msg)
            scores = np.zeros((lambdas.size, blends.size))
            base = 0.0
            everything = np.arange(train_qs.n_queries)
            for rows in folds.members:
                fold_train = train_qs.subset(np.setdiff1d(everything, rows))
                held = train_qs.subset(rows)
                fold_corpus = docs
                if fold_docs is not None:
                    fold_corpus = check_matrix(fold_docs(fold_train), "fold_docs(...)", dim=dim)
                    if fold_corpus.shape[0] != n_docs:
                        msg = (
                            f"fold_docs returned {fold_corpus.shape[0]} documents, "
                            f"expected {n_docs} (the rows of doc_embeddings)"
                        )
                        raise ValueError(msg)
                    fold_corpus = _unit(fold_corpus)
                fold_scores, fold_base = self._curve(
                    fold_corpus, fold_train, held, lambdas, blends, k
                )
                scores += fold_scores * held.n_queries
                base += fold_base * held.n_queries
            scores /= folds.n_held
            base /= folds.n_held
            method, n_folds, n_scored = "cv", folds.n_folds, folds.n_held
        # Best score; on ties the map closest to the identity (largest lambda, smallest blend).
        best = scores.max()
        i, j = min(
            zip(*np.nonzero(scores >= best - 1e-12)),
            key=lambda ij: (-lambdas[ij[0]], blends[ij[1]]),
        )
        lam, blend = float(lambdas[i]), float(blends[j])
        self.matrix_ = _blend(_ridge(train_qs, docs, lam), blend)
        self.lambda_ = lam
        self.blend_ = blend
        self.val_score_ = float(scores[i, j])
        self.base_score_ = float(base)
        self.val_scores_ = scores
        self.chosen_by_ = method
        self.n_folds_ = n_folds
        self.n_train_queries_ = train_qs.n_queries
        self.n_val_queries_ = n_scored
        self.n_features_in_ = dim
        logger.info(
            "QueryAdapter: lambda=%s, blend=%s (chosen by %s): nDCG@%d %.4f vs %.4f unadapted "
            "on %d queries",
            lam,
            blend,
            method,
            k,
            self.val_score_,
            self.base_score_,
            n_scored,
        )
        return self

    def _curve(
        self,
        docs: np.ndarray,
        train: QuerySet,
        held: QuerySet,
        lambdas: np.ndarray,
        blends: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, float]:
        """``(scores (n_lambdas, n_blends), score unadapted)`` of ``held`` over ``docs``."""
        queries = _unit(held.embeddings)
        relevance = held.relevance
        gram, cross = _normal_equations(train, docs)
        values, vectors = np.linalg.eigh(gram)
        # Every blend's ranking from two score tiles: unit() does not change a ranking, and
        # ((1 - b) q + b qW) . d = (1 - b) q.d + b qW.d.
        weights = np.concatenate([[0.0], blends])
        out = np.empty((lambdas.size, blends.size))
        base = 0.0
        for i, lam in enumerate(lambdas):
            mapped = queries @ _solve(values, vectors, cross, float(lam))
            tops = _blend_tops(queries, mapped, docs, weights, k, self.batch_size)
            ndcg = [
                float(evaluate(top, relevance, k, metrics=("ndcg",))[f"ndcg@{k}"]) for top in tops
            ]
            base = ndcg[0]
            out[i] = ndcg[1:]
        return out, base

    # ------------------------------------------------------------------ use
    def _check_fitted(self) -> None:
        if not hasattr(self, "matrix_"):
            msg = f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            raise NotFittedError(msg)

    @property
    def gain_(self) -> float:
        """``val_score_ - base_score_``: what the adapter gained on validation."""
        self._check_fitted()
        return self.val_score_ - self.base_score_

    def transform(self, query_embeddings: Any) -> np.ndarray:
        """Adapt query embeddings: ``unit(q @ matrix_)``, in blocks of ``batch_size``.

        Args:
            query_embeddings: ``(n, dim)`` (or one ``(dim,)``) float array.

        Returns:
            float32 unit-norm rows of the same shape (an all-zero query stays zero).

        Raises:
            NotFittedError: before ``fit``.
            ValueError: wrong dimension, NaN or inf.
        """
        self._check_fitted()
        # A light check (this runs for every search): the shape, then NaN / inf.
        try:
            queries = np.asarray(query_embeddings, dtype=np.float32)
        except (TypeError, ValueError) as err:
            msg = f"query_embeddings must be a float array, got {type(query_embeddings).__name__}"
            raise TypeError(msg) from err
        single = queries.ndim == 1
        if single:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.n_features_in_:
            msg = (
                f"query_embeddings must have shape (n, {self.n_features_in_}) or "
                f"({self.n_features_in_},), got {np.shape(query_embeddings)}"
            )
            raise ValueError(msg)
        if not np.isfinite(queries).all():
            msg = "query_embeddings contain NaN or inf"
            raise ValueError(msg)
        batch = check_positive_int(self.batch_size, "batch_size")
        out = np.empty(queries.shape, dtype=np.float32)
        for start in range(0, queries.shape[0], batch):
            # unit(unit(q) @ M) = unit(q @ M): a positive scale does not change the direction.
            mapped = queries[start : start + batch] @ self.matrix_
            norms = np.sqrt(np.einsum("ij,ij->i", mapped, mapped))
            out[start : start + batch] = mapped / np.where(norms > 0, norms, 1.0)[:, None]
        return out[0] if single else out

    @classmethod
    def from_matrix(cls, matrix: Any, **info: Any) -> QueryAdapter:
        """A fitted adapter from a saved ``matrix_`` (and optional fitted attributes).

        Args:
            matrix: ``(dim, dim)`` float array.
            **info: fitted attributes to restore (``lambda_``, ``blend_``, ``val_score_``,
                ``base_score_``, ``chosen_by_``); unknown names raise ``TypeError``.

        Raises:
            ValueError: ``matrix`` is not square, or holds NaN or inf.
        """
        matrix = check_matrix(matrix, "matrix")
        if matrix.shape[0] != matrix.shape[1]:
            msg = f"matrix must be square (dim, dim), got shape {matrix.shape}"
            raise ValueError(msg)
        known = {"lambda_", "blend_", "val_score_", "base_score_", "chosen_by_"}
        unknown = sorted(set(info) - known)
        if unknown:
            msg = f"from_matrix got unknown fitted attributes {unknown}; known: {sorted(known)}"
            raise TypeError(msg)
        adapter = cls()
        adapter.matrix_ = np.ascontiguousarray(matrix, dtype=np.float32)
        adapter.n_features_in_ = int(matrix.shape[0])
        for name in sorted(known):
            setattr(adapter, name, info.get(name))
        return adapter


# ---------------------------------------------------------------------- helpers
def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _normal_equations(train: QuerySet, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Q^T Q, Q^T Y)`` in float64: ``Q`` unit questions, ``Y`` mean of their answers."""
    queries = _unit(train.embeddings).astype(np.float64)
    counts = np.diff(train.indptr)
    weights = np.repeat(1.0 / counts, counts)
    mean_of_answers = sp.csr_matrix(
        (weights, train.indices, train.indptr), shape=(train.n_queries, docs.shape[0])
    )
    targets = np.asarray(mean_of_answers @ docs.astype(np.float64))
    return queries.T @ queries, queries.T @ targets


def _solve(values: np.ndarray, vectors: np.ndarray, cross: np.ndarray, lam: float) -> np.ndarray:
    """``W = (G + lam I)^-1 (C + lam I)`` from ``G``'s eigendecomposition, float32.

    Ridge toward the identity: ``lam -> inf`` gives ``W -> I``.
    """
    right = cross.copy()
    right[np.diag_indices_from(right)] += lam
    inverse = (vectors / (values + lam)) @ vectors.T
    return (inverse @ right).astype(np.float32)


def _ridge(train: QuerySet, docs: np.ndarray, lam: float) -> np.ndarray:
    gram, cross = _normal_equations(train, docs)
    values, vectors = np.linalg.eigh(gram)
    return _solve(values, vectors, cross, lam)


def _blend_tops(
    queries: np.ndarray,
    mapped: np.ndarray,
    docs: np.ndarray,
    weights: np.ndarray,
    k: int,
    batch_size: int,
) -> list[np.ndarray]:
    """For each weight ``b``, the ``(n, k)`` best rows of ``docs`` for ``(1 - b) q + b m``."""
    n, n_docs = queries.shape[0], docs.shape[0]
    k_eff = min(k, n_docs)
    tops = [np.full((n, k), -1, dtype=np.int64) for _ in weights]
    step = max(1, min(batch_size, _TILE_ELEMENTS // max(n_docs, 1)))
    for start in range(0, n, step):
        stop = min(start + step, n)
        plain = queries[start:stop] @ docs.T
        moved = mapped[start:stop] @ docs.T
        for top, weight in zip(tops, weights):
            tile = plain if weight == 0 else (1 - weight) * plain + weight * moved
            cols = np.argpartition(-tile, k_eff - 1, axis=1)[:, :k_eff]
            picked = np.take_along_axis(tile, cols, axis=1)
            order = np.argsort(-picked, axis=1, kind="stable")
            top[start:stop, :k_eff] = np.take_along_axis(cols, order, axis=1)
    return tops


def _blend(matrix: np.ndarray, blend: float) -> np.ndarray:
    """``(1 - blend) I + blend W`` as float32."""
    out = blend * matrix.astype(np.float64)
    out[np.diag_indices_from(out)] += 1.0 - blend
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_grid(
    values: Any, name: str, *, low: float, high: float | None, low_open: bool
) -> np.ndarray:
    """A non-empty 1-D float64 grid with every value in ``(low, high]``."""
    try:
        grid = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        msg = f"{name} must be a sequence of numbers, got {values!r}"
        raise TypeError(msg) from err
    bound = f"({low}, {'inf' if high is None else high}]"
    if grid.ndim != 1 or grid.size == 0:
        msg = f"{name} must be a non-empty 1-D sequence of numbers in {bound}, got {values!r}"
        raise ValueError(msg)
    bad = ~np.isfinite(grid) | (grid <= low if low_open else grid < low)
    if high is not None:
        bad |= grid > high
    if bad.any():
        msg = f"{name} must be numbers in {bound}, got {grid[bad].tolist()} in {values!r}"
        raise ValueError(msg)
    return grid
