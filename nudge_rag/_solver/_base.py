"""The estimator base both variants share: parameters, ``fit`` plumbing, fitted attributes.

:func:`fit_solver` is the one fit path: it checks the inputs once, builds the
:class:`~nudge_rag._solver._problem._Problem` and hands it to the variant's ``_fit_problem``.
The public :meth:`_NudgeBase.fit` and the reference-compatible layer (``nudge_rag.compat``,
which also passes competitor-only documents and wants the whole tuned matrix) both call it.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar, TypeVar

import numpy as np

from nudge_rag._queryset import QuerySet
from nudge_rag._solver._problem import _normalize_into, _Problem
from nudge_rag._validation import check_gamma, check_matrix, check_positive_int

logger = logging.getLogger("nudge_rag._solver")

Solver = TypeVar("Solver", bound="_NudgeBase")


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute is used before ``fit``."""


class _NudgeBase:
    """Shared ``fit`` plumbing: checks, validation split, fitted attributes."""

    similarity: ClassVar[str]

    def __init__(
        self,
        *,
        gamma: float | None = None,
        val_fraction: float = 0.1,
        random_state: int | None = 0,
        batch_size: int = 4096,
        show_progress: bool = False,
    ):
        self.gamma = gamma
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.batch_size = batch_size
        self.show_progress = show_progress

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict[str, Any]:
        """The constructor's hyperparameters (scikit-learn convention)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    # ------------------------------------------------------------------ fit
    def fit(
        self: Solver,
        doc_embeddings: np.ndarray,
        train: QuerySet | Any,
        val: QuerySet | Any | None = None,
        *,
        passive_scores: np.ndarray | None = None,
    ) -> Solver:
        """Learn new embeddings for the documents that answer training queries.

        Args:
            doc_embeddings: ``(n_docs, dim)`` float32 array (float64 is converted; an
                ``np.memmap`` is streamed in blocks, not loaded whole). Rows need not be
                unit-norm: they are normalised.
            train: training queries: a :class:`QuerySet` (or ``(embeddings, answers)`` or the
                reference's ``{"q_embs", "q_ans_indx"}`` dict); answers are document rows.
            val: validation queries in the same form. ``None`` splits ``val_fraction`` of the
                training queries off (seeded by ``random_state``) when gamma is searched.
            passive_scores: optional ``(n_val, val_k)`` float array: for each validation query,
                its best scores ``q . unit(d)`` over documents that are *not* in
                ``doc_embeddings`` (best first; ``-inf`` pads), e.g. from the vector store's own
                kNN index. Documents that answer no query only matter through these scores, so
                with them ``doc_embeddings`` need only hold the answer documents. Needs ``val``.

        Returns:
            self, with ``gamma_``, ``val_score_``, ``changed_rows_``, ``changed_embeddings_``
            and ``embeddings_``.
        """
        return fit_solver(self, doc_embeddings, train, val, passive_scores=passive_scores)

    def _val_k(self) -> int:
        return 1

    def _gamma_upper(self) -> float | None:
        return None

    def _fit_problem(
        self,
        problem: _Problem,
        val: QuerySet | None,
        fixed: float | None,
        passive_scores: np.ndarray | None,
        dense: np.ndarray | None,
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ results
    def _check_fitted(self) -> None:
        if not hasattr(self, "changed_rows_"):
            msg = f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            raise NotFittedError(msg)

    @property
    def embeddings_(self) -> np.ndarray:
        """``(n_docs, dim)`` float32: all document embeddings after tuning.

        Rows are the normalised inputs with the moved rows replaced. Built on access (one
        copy of the corpus); at large scale use ``changed_rows_`` / ``changed_embeddings_`` or
        :meth:`transform` with ``out=`` instead.
        """
        self._check_fitted()
        cached = self._embeddings_cache
        if cached is None:
            cached = self.transform(self._docs)
            self._embeddings_cache = cached
        return cached

    def transform(self, doc_embeddings: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Apply the learned change to the corpus that was fitted.

        Args:
            doc_embeddings: the ``(n_docs, dim)`` array passed to ``fit``.
            out: optional ``(n_docs, dim)`` float32 array (e.g. an ``np.memmap``) to write into.

        Returns:
            The tuned embeddings (``out`` when given): normalised rows, moved rows replaced.
        """
        self._check_fitted()
        docs = check_matrix(
            doc_embeddings, "doc_embeddings", dim=self.n_features_in_, check_finite=False
        )
        if docs.shape[0] != self.n_docs_:
            msg = (
                f"doc_embeddings has {docs.shape[0]} rows, "
                f"but {type(self).__name__} was fitted on {self.n_docs_}"
            )
            raise ValueError(msg)
        if out is None:
            out = np.empty(docs.shape, dtype=np.float32)
        elif out.shape != docs.shape or out.dtype != np.float32:
            msg = f"out must be a float32 array of shape {docs.shape}, got {out.dtype} {out.shape}"
            raise ValueError(msg)
        _normalize_into(docs, out, skip=self.changed_rows_)
        if self.changed_rows_.size:
            out[self.changed_rows_] = self.changed_embeddings_
        return out

    @property
    def changed_embeddings_(self) -> np.ndarray:
        """``(n_changed, dim)`` float32: the new vectors of ``changed_rows_``."""
        self._check_fitted()
        if self._changed_embeddings is None:  # written straight into embeddings_ by fit
            self._changed_embeddings = self._embeddings_cache[self.changed_rows_]
        return self._changed_embeddings

    def _set_result(
        self, gamma: float, val_score: float | None, rows: np.ndarray, vectors: np.ndarray | None
    ) -> None:
        """Record the fit; ``vectors`` is ``None`` when they went into the dense output."""
        self.gamma_ = float(gamma) + 0.0  # no -0.0
        self.val_score_ = None if val_score is None else float(val_score)
        self.changed_rows_ = rows.astype(np.int64)
        self._changed_embeddings = (
            None if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32)
        )
        self._embeddings_cache: np.ndarray | None = None


def fit_solver(
    solver: Solver,
    doc_embeddings: np.ndarray,
    train: QuerySet | Any,
    val: QuerySet | Any | None = None,
    *,
    passive_scores: np.ndarray | None = None,
    nontrain_embeddings: np.ndarray | None = None,
    dense_output: bool = False,
) -> Solver:
    """Fit ``solver``: the path behind ``fit`` and the reference-compatible layer.

    Args:
        solver: the estimator to fit (its hyperparameters are read here).
        doc_embeddings: see :meth:`_NudgeBase.fit`.
        train: see :meth:`_NudgeBase.fit`.
        val: see :meth:`_NudgeBase.fit`.
        passive_scores: see :meth:`_NudgeBase.fit`.
        nontrain_embeddings: optional ``(n, dim)`` documents that answer no query and are
            not part of the output: they only compete for the validation queries' top-1
            (the reference's ``nontrain_embeddings``).
        dense_output: build the whole ``(n_docs, dim)`` tuned matrix (``embeddings_``) during
            the fit, writing the moved rows straight into it (no separate copy of them).

    Returns:
        ``solver``, fitted.
    """
    docs = check_matrix(doc_embeddings, "doc_embeddings", check_finite=False)
    n_docs, dim = docs.shape
    batch_size = check_positive_int(solver.batch_size, "batch_size")
    fixed = None if solver.gamma is None else check_gamma(solver.gamma, upper=solver._gamma_upper())
    train_qs = _as_queryset(train, "train").checked(n_docs, dim, "train")
    val_qs = None if val is None else _as_queryset(val, "val").checked(n_docs, dim, "val")
    if val_qs is None and fixed is None:
        train_qs, val_qs = train_qs.split(solver.val_fraction, random_state=solver.random_state)
        logger.info(
            "split %d validation queries off %d training queries (val_fraction=%s)",
            val_qs.n_queries,
            train_qs.n_queries + val_qs.n_queries,
            solver.val_fraction,
        )
    if passive_scores is not None:
        if val is None:
            msg = "passive_scores needs an explicit val (they score the validation queries)"
            raise ValueError(msg)
        passive_scores = _checked_passive_scores(passive_scores, val, val_qs, solver._val_k())
    extra = None
    if nontrain_embeddings is not None:
        extra = check_matrix(
            nontrain_embeddings,
            "nontrain_embeddings",
            dim=dim,
            allow_empty=True,
            check_finite=False,
        )
    solver._val_k()  # checks val_k
    problem = _Problem(docs, train_qs, val_qs, batch_size, extra, bool(solver.show_progress))
    dense = np.empty((n_docs, dim), dtype=np.float32) if dense_output else None
    solver._fit_problem(problem, val_qs, fixed, passive_scores, dense)
    if dense is not None:
        _normalize_into(docs, dense, skip=solver.changed_rows_)
        solver._embeddings_cache = dense
    solver._docs = docs
    solver.n_docs_ = n_docs
    solver.n_features_in_ = dim
    solver.n_train_queries_ = train_qs.n_queries
    solver.n_val_queries_ = 0 if val_qs is None else val_qs.n_queries
    logger.info(
        "%s: gamma=%s, validation score=%s, %d of %d rows moved",
        type(solver).__name__,
        solver.gamma_,
        solver.val_score_,
        solver.changed_rows_.size,
        n_docs,
    )
    return solver


def _checked_passive_scores(
    passive_scores: np.ndarray, raw: Any, kept: QuerySet, k: int
) -> np.ndarray:
    """``(kept.n_queries, k)`` float32 best-first passive scores of the kept queries.

    Args:
        passive_scores: the caller's ``(n_raw, >= k)`` scores, one row per query of ``raw``.
        raw: the query set as passed (before queries without answers were dropped).
        kept: the checked query set.
        k: scores kept per query.
    """
    n_raw = raw.n_queries if isinstance(raw, QuerySet) else _as_queryset(raw, "val").n_queries
    passive_scores = np.asarray(passive_scores, dtype=np.float32)
    if passive_scores.ndim != 2 or passive_scores.shape[0] != n_raw or passive_scores.shape[1] < k:
        msg = (
            f"passive_scores must have shape (n_val, val_k) = ({n_raw}, {k}) "
            "(or more columns), "
            f"got {passive_scores.shape}"
        )
        raise ValueError(msg)
    if np.isnan(passive_scores).any() or np.isposinf(passive_scores).any():
        msg = "passive_scores must be finite scores (or -inf for padding), got NaN or +inf"
        raise ValueError(msg)
    passive_scores = -np.sort(-passive_scores, axis=1)[:, :k]
    if kept.n_queries != n_raw:  # queries without answers were dropped
        passive_scores = passive_scores[_kept_queries(raw)]
    return passive_scores


def _as_queryset(value: Any, name: str) -> QuerySet:
    if isinstance(value, QuerySet):
        return value
    if isinstance(value, dict) and "q_embs" in value and "q_ans_indx" in value:
        return QuerySet(value["q_embs"], value["q_ans_indx"])
    if isinstance(value, tuple) and len(value) == 2:
        return QuerySet(value[0], value[1])
    msg = (
        f"{name} must be a QuerySet (or an (embeddings, answers) pair, or a "
        f"{{'q_embs', 'q_ans_indx'}} dict), got {type(value).__name__}"
    )
    raise TypeError(msg)


def _kept_queries(raw: Any) -> np.ndarray:
    """Rows of the raw query set that keep at least one answer (as ``checked`` does)."""
    qs = raw if isinstance(raw, QuerySet) else _as_queryset(raw, "val")
    return np.flatnonzero(np.diff(qs.indptr) > 0)
