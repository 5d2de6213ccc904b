"""The estimator base both variants share: parameters, ``fit`` plumbing, fitted attributes.

:func:`fit_solver` is the one fit path: it checks the inputs once, builds the
:class:`~nudge_rag._solver._problem._Problem`, has the variant choose gamma (``_search`` on
validation queries, ``_search_cv`` by cross-validation, or the fixed ``gamma``) and then
apply it (``_apply``), on train and val together when ``refit_on_val``.
The public :meth:`_NudgeBase.fit` and the reference-compatible layer (``nudge_rag.compat``,
which also passes competitor-only documents and wants the whole tuned matrix) both call it.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from nudge_rag._errors import NotFittedError
from nudge_rag._queryset import QuerySet
from nudge_rag._solver._cv import _Folds
from nudge_rag._solver._problem import _normalize_into, _Problem
from nudge_rag._validation import check_gamma, check_matrix, check_positive_int

logger = logging.getLogger("nudge_rag._solver")

Solver = TypeVar("Solver", bound="_NudgeBase")

#: Folds of the cross-validation that chooses gamma when no ``val`` is given.
DEFAULT_FOLDS = 10

#: Repetitions of the K-fold deal (each a new seeded deal of the same queries), at most: the
#: curves of all repetitions are pooled, so gamma depends less on how one deal fell. Fewer
#: are run when the repetitions would score more than ``cv_max_queries`` held-out queries in
#: all (a large training set gets one), so the cost of choosing gamma stays bounded.
DEFAULT_REPEATS = 3

#: At most this many training queries are held out over all folds (the paper caps
#: validation at 10,000 queries): the cost of choosing gamma stops growing with the
#: training set, while every query is still used by the final fit.
CV_MAX_QUERIES = 10_000

#: Cross-validation takes the largest gamma whose mean score is within this many standard
#: errors (of the per-fold scores at the best gamma) of the best, unless the best is 0. The
#: final fit uses every training query, more than any fold's fit, which supports at least
#: as large a step; on nfcorpus dev this gained about 1 nDCG@10 point for both variants and
#: on generated tasks it changed nothing.
CV_TOLERANCE = 0.5


class _Curve(NamedTuple):
    """A cross-validation curve: the score of each candidate gamma, per fold and pooled.

    Attributes:
        gammas: ``(n_candidates,)`` float64 candidate gammas, increasing.
        scores: ``(n_candidates,)`` float64 validation score over all held-out queries.
        std: ``(n_candidates,)`` float64 standard deviation of the per-fold scores.
        fold_scores: ``(n_folds, n_candidates)`` float64 score of each fold.
    """

    gammas: np.ndarray
    scores: np.ndarray
    std: np.ndarray
    fold_scores: np.ndarray


class _NudgeBase:
    """Shared ``fit`` plumbing: checks, how gamma is chosen, fitted attributes."""

    similarity: ClassVar[str]

    def __init__(
        self,
        *,
        gamma: float | None = None,
        cv: int | None = DEFAULT_FOLDS,
        cv_max_queries: int | None = CV_MAX_QUERIES,
        cv_repeats: int = DEFAULT_REPEATS,
        refit_on_val: bool = False,
        val_fraction: float = 0.1,
        random_state: int | None = 0,
        batch_size: int = 4096,
        show_progress: bool = False,
    ):
        self.gamma = gamma
        self.cv = cv
        self.cv_max_queries = cv_max_queries
        self.cv_repeats = cv_repeats
        self.refit_on_val = refit_on_val
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

        Gamma is the fixed ``gamma`` if set; otherwise it is chosen on ``val`` when given,
        else by ``cv``-fold cross-validation over the training queries (then the final fit
        uses every training query), else (``cv=None``) on a held-out ``val_fraction``.

        Args:
            doc_embeddings: ``(n_docs, dim)`` float32 array (float64 is converted; an
                ``np.memmap`` is streamed in blocks, not loaded whole). Rows need not be
                unit-norm: they are normalised.
            train: training queries: a :class:`QuerySet` (or ``(embeddings, answers)`` or the
                reference's ``{"q_embs", "q_ans_indx"}`` dict); answers are document rows.
            val: optional validation queries in the same form, to choose gamma on.
            passive_scores: optional float array of best scores ``q . unit(d)`` over
                documents that are *not* in ``doc_embeddings`` (best first; ``-inf`` pads),
                e.g. from the vector store's own kNN index: ``(n_val, val_k)``, one row per
                ``val`` query, or without ``val`` (cross-validation) ``(n_train, val_k)``,
                one row per ``train`` query. Documents that answer no query only matter
                through these scores, so with them ``doc_embeddings`` need only hold the
                answer documents.

        Returns:
            self, with ``gamma_``, ``val_score_``, ``gamma_chosen_by_``, ``changed_rows_``,
            ``changed_embeddings_`` and ``embeddings_`` (and the ``cv_*`` curve after
            cross-validation).
        """
        return fit_solver(self, doc_embeddings, train, val, passive_scores=passive_scores)

    def _val_k(self) -> int:
        return 1

    def _gamma_upper(self) -> float | None:
        return None

    def _start_fit(self) -> None:
        """Reset per-fit search results (a variant's hook)."""

    def _search(
        self,
        problem: _Problem,
        val: QuerySet,
        passive_scores: np.ndarray | None,
        fixed: float | None,
    ) -> tuple[float, float]:  # pragma: no cover
        """``(gamma, validation score)`` on ``val`` (the score of ``fixed`` when set)."""
        raise NotImplementedError

    def _search_cv(
        self, problem: _Problem, folds: _Folds, passive_scores: np.ndarray | None
    ) -> tuple[float, float, _Curve]:  # pragma: no cover
        """``(gamma, pooled validation score, curve)`` by cross-validation over ``folds``."""
        raise NotImplementedError

    def _apply(
        self, problem: _Problem, gamma: float, dense: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        """``(document rows, new vectors)`` of the rows that move at ``gamma``.

        The vectors are ``None`` when they were written into ``dense`` instead.
        """
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
    k = solver._val_k()
    n_folds = _check_cv(solver.cv)
    max_queries = (
        None
        if solver.cv_max_queries is None
        else check_positive_int(solver.cv_max_queries, "cv_max_queries")
    )
    max_repeats = check_positive_int(solver.cv_repeats, "cv_repeats")
    val_fraction = _check_fraction(solver.val_fraction)
    refit_on_val = _check_bool(solver.refit_on_val, "refit_on_val")
    train_qs = _as_queryset(train, "train").checked(n_docs, dim, "train")
    val_qs = None if val is None else _as_queryset(val, "val").checked(n_docs, dim, "val")
    if fixed is not None:
        method = "fixed"
    elif val_qs is not None or n_folds is None:
        method = "val"
    else:
        method = "cv"
    if passive_scores is not None:
        if val is not None:
            passive_scores = _checked_passive_scores(passive_scores, val, val_qs, k, "n_val")
        elif method == "val":
            msg = (
                "passive_scores with cv=None needs an explicit val (they score the validation "
                "queries); pass val=, or use cross-validation (cv=int) with passive_scores for "
                "every training query"
            )
            raise ValueError(msg)
        else:  # one row per training query: cross-validation holds them out
            passive_scores = _checked_passive_scores(passive_scores, train, train_qs, k, "n_train")
    all_train = train_qs
    if method == "val" and val_qs is None:  # cv=None: one held-out split
        train_qs, val_qs = train_qs.split(val_fraction, random_state=solver.random_state)
        logger.info(
            "split %d validation queries off %d training queries (val_fraction=%s)",
            val_qs.n_queries,
            all_train.n_queries,
            val_fraction,
        )
    folds = None
    if method == "cv":
        n_repeats = max_repeats
        if max_queries is not None:  # every deal scores each held-out query once
            n_held = max(min(train_qs.n_queries, max_queries), 1)
            n_repeats = max(1, min(max_repeats, max_queries // n_held))
        folds = _Folds(train_qs.n_queries, n_folds, max_queries, solver.random_state, n_repeats)
        if folds.n_folds < 2:
            msg = (
                f"train has {train_qs.n_queries} query with answers: cross-validating gamma "
                "needs at least 2; pass val= or a fixed gamma="
            )
            raise ValueError(msg)
        logger.info(
            "cross-validating gamma: %d folds x %d repetitions over %d of %d training queries",
            folds.n_folds,
            folds.n_repeats,
            folds.n_held,
            train_qs.n_queries,
        )
    extra = None
    if nontrain_embeddings is not None:
        extra = check_matrix(
            nontrain_embeddings,
            "nontrain_embeddings",
            dim=dim,
            allow_empty=True,
            check_finite=False,
        )
    problem = _Problem(docs, train_qs, val_qs, batch_size, extra, bool(solver.show_progress))
    solver._start_fit()
    curve = None
    if folds is not None:
        start = None if passive_scores is None else passive_scores[folds.held]
        gamma, val_score, curve = solver._search_cv(problem, folds, start)
    elif val_qs is not None:
        gamma, val_score = solver._search(problem, val_qs, passive_scores, fixed)
    else:
        problem.check_passive_rows()
        gamma, val_score = fixed, None
    if refit_on_val and val_qs is not None:
        fit_set = all_train if val is None else _concat(train_qs, val_qs)
        del problem
        problem = _Problem(docs, fit_set, None, batch_size, None, bool(solver.show_progress))
    dense = np.empty((n_docs, dim), dtype=np.float32) if dense_output else None
    rows, vectors = solver._apply(problem, gamma, dense)
    solver._set_result(gamma, val_score, rows, vectors)
    if dense is not None:
        _normalize_into(docs, dense, skip=solver.changed_rows_)
        solver._embeddings_cache = dense
    solver._docs = docs
    solver.n_docs_ = n_docs
    solver.n_features_in_ = dim
    solver.n_train_queries_ = problem.train.n_queries
    solver.n_val_queries_ = (
        folds.n_held if folds is not None else 0 if val_qs is None else val_qs.n_queries
    )
    solver.gamma_chosen_by_ = method
    solver.n_folds_ = 0 if folds is None else folds.n_folds
    solver.n_cv_repeats_ = 0 if folds is None else folds.n_repeats
    solver.cv_gammas_ = None if curve is None else curve.gammas
    solver.cv_scores_ = None if curve is None else curve.scores
    solver.cv_std_ = None if curve is None else curve.std
    solver.cv_fold_scores_ = None if curve is None else curve.fold_scores
    logger.info(
        "%s: gamma=%s (chosen by %s), validation score=%s, %d of %d rows moved",
        type(solver).__name__,
        solver.gamma_,
        method,
        solver.val_score_,
        solver.changed_rows_.size,
        n_docs,
    )
    return solver


def cv_choice(
    gammas: np.ndarray, scores: np.ndarray, fold_scores: np.ndarray, n_folds: int | None = None
) -> int:
    """Index of the cross-validated gamma among increasing candidates ``gammas``.

    The best mean score's smallest gamma, moved up to the largest gamma whose mean score is
    within :data:`CV_TOLERANCE` standard errors of it (unless the best gamma is 0: then
    nothing moves).

    Args:
        gammas: ``(n,)`` increasing candidates.
        scores: ``(n,)`` mean scores over all held-out queries.
        fold_scores: ``(n_splits, n)`` per-fold scores (the folds of every repetition).
        n_folds: folds per repetition (default: one repetition, ``fold_scores.shape[0]``).
            The standard error is that of one repetition's mean, the spread of all folds'
            scores over ``sqrt(n_folds - 1)``: repetitions of the same queries are not
            independent evidence, so they make the curve steadier, not the error smaller.
    """
    best = int(np.argmax(scores))
    n_folds = fold_scores.shape[0] if n_folds is None else n_folds
    if gammas[best] == 0 or n_folds < 2:
        return best
    se = float(fold_scores[:, best].std()) / np.sqrt(n_folds - 1)
    within = np.flatnonzero(scores >= scores[best] - CV_TOLERANCE * se - 1e-12)
    return int(within.max())


def _concat(a: QuerySet, b: QuerySet) -> QuerySet:
    """The queries of ``a`` then those of ``b``, as one set."""
    indptr = np.concatenate([a.indptr, b.indptr[1:] + a.indptr[-1]])
    indices = np.concatenate([a.indices, b.indices])
    return QuerySet(np.concatenate([a.embeddings, b.embeddings]), (indptr, indices))


def _check_cv(value: Any) -> int | None:
    """``cv``: ``None`` or an int >= 2 (the number of folds)."""
    if value is None:
        return None
    folds = check_positive_int(value, "cv")
    if folds < 2:
        msg = f"cv must be None or a number of folds >= 2, got {value!r}"
        raise ValueError(msg)
    return folds


def _check_fraction(value: Any) -> float:
    """``val_fraction``: a float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        msg = f"val_fraction must be a number in (0, 1), got {value!r}"
        raise TypeError(msg)
    if not 0 < value < 1:
        msg = f"val_fraction must be in (0, 1), got {value}"
        raise ValueError(msg)
    return float(value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        msg = f"{name} must be True or False, got {value!r}"
        raise TypeError(msg)
    return bool(value)


def _checked_passive_scores(
    passive_scores: np.ndarray, raw: Any, kept: QuerySet, k: int, rows_name: str
) -> np.ndarray:
    """``(kept.n_queries, k)`` float32 best-first passive scores of the kept queries.

    Args:
        passive_scores: the caller's ``(n_raw, >= k)`` scores, one row per query of ``raw``.
        raw: the query set as passed (before queries without answers were dropped).
        kept: the checked query set.
        k: scores kept per query.
        rows_name: what the rows are, for the error message (``"n_val"``, ``"n_train"``).
    """
    n_raw = raw.n_queries if isinstance(raw, QuerySet) else _as_queryset(raw, "val").n_queries
    passive_scores = np.asarray(passive_scores, dtype=np.float32)
    if passive_scores.ndim != 2 or passive_scores.shape[0] != n_raw or passive_scores.shape[1] < k:
        msg = (
            f"passive_scores must have shape ({rows_name}, val_k) = ({n_raw}, {k}) "
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
