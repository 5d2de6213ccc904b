"""NUDGE-N and NUDGE-M solvers (Zeighami et al., arXiv 2409.02343), in numpy.

Notation (per document row ``j`` that answers training queries):

* ``v_j``: the unit-normalised document embedding;
* ``g_j``: the sum of the embeddings of the training queries it answers;
* NUDGE-N moves ``v_j`` on the unit sphere toward ``g_j``, at most ``sqrt(gamma)`` away:
  ``v'_j = (1 - gamma/2) v_j + sqrt(gamma (4 - gamma))/2 * unit(g_j - (g_j.v_j) v_j)``, or
  ``unit(g_j)`` once that lies inside the ball (``v_j.unit(g_j) >= 1 - gamma/2``); rows with
  ``g_j.v_j < 0`` do not move. This is the reference's closed form rewritten so that it does
  not take ``sqrt(|g|^2 - (g.v)^2)`` of a float32 cancellation (which made NaN rows there).
* NUDGE-M adds ``gamma * unit(g_j)`` (a change of norm exactly ``gamma``); its output is not
  normalised, so it must be scored by dot product.

Both score a validation query ``q`` against a moved row as ``S * alpha_j + T * beta_j`` with
``S = q.v_j`` and ``T = q.w_j`` (``w = g`` for NUDGE-N, ``-unit(g)`` for NUDGE-M) — two
matmuls, then per-row coefficients per gamma. NUDGE-N only scores, per gamma, the (query, row)
pairs that can be top-1 somewhere on the grid: a row moves on the unit circle through ``v``
and ``u = unit(g - (g.v) v)``, so ``R = |(q.v, q.u)|`` bounds its score from above, and its
score at either end of the grid bounds it from below. Documents that answer no training or
validation query never move; they matter only through their best score per validation query,
computed once in a streaming pass over the corpus.

Large arrays are touched in cache-sized blocks and as few times as possible: on a 2-core
machine most of a small fit is memory traffic, not arithmetic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import scipy.sparse as sp

from nudge_rag._queryset import QuerySet
from nudge_rag._validation import check_gamma, check_matrix, check_positive_int, row_sq_norms

logger = logging.getLogger(__name__)

__all__ = ["NudgeN", "NudgeM", "NotFittedError", "DEFAULT_GAMMAS"]

#: The reference's NUDGE-N grid: 0, 0.02, ..., 0.48 (computed as in ``nudge-ft``).
DEFAULT_GAMMAS: tuple[float, ...] = tuple(0.02 * x for x in range(25))

# nudge-ft divides slopes by (g_dif + 1e-8); keeping it reproduces its gamma.
_SLOPE_EPS = 1e-8

# Above this many passive scores (n_passive x n_val), NUDGE-M first finds the intervals
# without the passive rows so that hopeless queries can stop the streaming pass early.
_EARLY_STOP_SCORES = 1 << 26

# Elements per dense score block (float32): bounds memory at ~64 MB per block.
_BLOCK_ELEMENTS = 1 << 22

# Scores per block in the streaming pass over the corpus (one float32 buffer, ~64 MB).
_STREAM_BLOCK = 1 << 24

# Pruning keeps rows whose upper bound is within this of the lower bound, so that float32
# rounding of the per-gamma scores never drops a row that ties for top-1.
_BOUND_SLACK = 1e-6

# NUDGE-N pruning takes its lower bounds from the rows within this of a query's best S.
_NEAR_BEST = 0.05

# Elements per temporary in passes that chain several element-wise steps (256 KB of float32,
# so that the temporaries stay in a core's cache).
_CACHE_ELEMENTS = 1 << 16


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute is used before ``fit``."""


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


def _row_norms(block: np.ndarray, sq: np.ndarray | None = None) -> np.ndarray:
    """Row norms in float32, recomputed in float64 where float32 over- or underflows.

    Args:
        block: ``(n, dim)`` float32 rows.
        sq: their squared norms if already computed (see :func:`row_sq_norms`).
    """
    if sq is None:
        sq = row_sq_norms(block)
    norms = np.sqrt(sq)
    bad = ~np.isfinite(norms) | (norms < 1e-18)
    if bad.any():  # float64 norms: float32 would round them (denormals) or overflow
        norms = norms.astype(np.float64)
        norms[bad] = np.linalg.norm(block[bad].astype(np.float64), axis=1)
    return norms


def _refuse_bad_rows(block: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
    """Row norms of ``block``, after refusing rows that cannot be normalised.

    ``ValueError`` names the first row that holds NaN or inf, then the first that is all
    zeros (cosine is undefined for it).

    Args:
        block: ``(n, dim)`` float32 rows.
        rows: the row number of each in the caller's argument.
        name: the argument's name.
    """
    norms = _row_norms(block)  # float64 where float32 overflows: non-finite only for NaN/inf
    bad = ~np.isfinite(norms)
    if bad.any():
        row = int(rows[np.argmax(bad)])
        msg = f"{name} must be finite, but row {row} holds NaN or inf"
        raise ValueError(msg)
    if not norms.all():
        row = int(rows[np.argmin(norms != 0)])
        msg = (
            f"{name} row {row} is all zeros: cosine similarity is undefined for it; "
            "remove it or give it a real embedding"
        )
        raise ValueError(msg)
    return norms


class _Problem:
    """Everything a solver needs, gathered once from the inputs.

    Rows are split into *active* rows (answers of a training or validation query, gathered
    into memory) and *passive* rows (the rest, only streamed once by :meth:`stream` to get
    each validation query's best passive scores). Active rows are ordered training answers
    first (``n_train_rows`` of them, the only rows that can move), then rows that answer
    validation queries only; ``g`` holds the training-query sums of the first group.
    """

    def __init__(
        self,
        docs: np.ndarray,
        train: QuerySet,
        val: QuerySet | None,
        k: int,
        batch_size: int,
        extra_passive: np.ndarray | None = None,
        passive_scores: np.ndarray | None = None,
    ):
        n_docs, dim = docs.shape
        self.passive_scores = passive_scores
        self.n_docs, self.dim = n_docs, dim
        self.docs, self.extra_passive = docs, extra_passive
        marked = np.zeros(n_docs, dtype=bool)
        marked[train.indices] = True
        train_rows = np.flatnonzero(marked)
        self.n_train_rows = train_rows.size
        if val is not None:
            marked[:] = False
            marked[val.indices] = True
            marked[train_rows] = False
            self.active = np.concatenate([train_rows, np.flatnonzero(marked)])
        else:
            self.active = train_rows
        del marked
        n_active = self.active.size
        # Position of each active row (a lookup table is much faster than searchsorted).
        lookup = np.empty(n_docs, dtype=np.int32 if n_active < 2**31 else np.int64)
        lookup[self.active] = np.arange(n_active, dtype=lookup.dtype)

        val_cols = None if val is None else lookup[val.indices].astype(np.int64)

        # g = sum of training queries per training-answer row, through a sparse
        # (n_train_rows x n_train) map whose columns are the training queries (so the CSC
        # indptr is train's own); as CSR, each row's sum is accumulated in place, faster than
        # CSC's scattered updates.
        assign = sp.csc_matrix(
            (np.ones(train.indices.size, dtype=np.float32), lookup[train.indices], train.indptr),
            shape=(self.n_train_rows, train.n_queries),
        )
        del lookup
        self.g = np.asarray(assign.tocsr() @ train.embeddings, dtype=np.float32)
        del assign
        # v = unit active rows, with |g| and g.v computed while each block is in cache.
        self.g_norm = np.empty(self.n_train_rows, dtype=np.float32)
        self.g_dot_v = np.empty(self.n_train_rows, dtype=np.float32)
        self.v = self._gather_unit_rows(docs)
        tiny = np.flatnonzero(~np.isfinite(self.g_norm) | (self.g_norm < 1e-18))
        if tiny.size:
            # Sums so small that float32 loses them (their squares underflow; 1 / |g| may
            # overflow): only their direction matters, so those rows are rescaled to unit norm.
            g64 = self.g[tiny].astype(np.float64)
            norms = np.linalg.norm(g64, axis=1)
            nonzero = norms > 0
            g64[nonzero] /= norms[nonzero, None]
            self.g[tiny] = g64.astype(np.float32)
            self.g_norm[tiny] = np.where(nonzero, 1.0, 0.0)
            self.g_dot_v[tiny] = np.einsum("ij,ij->i", self.g[tiny], self.v[tiny])
        # The solver's second scoring basis, one row per training-answer row (set by the solver).
        self.w: np.ndarray | None = None
        # Optional (n_docs, dim) output that the moved rows are written into directly.
        self.dense: np.ndarray | None = None

        self.val = val
        self.k = k
        self.batch_size = batch_size
        self.passive_top: np.ndarray | None = None
        if val is not None:
            self.val_cols = val_cols
            self.val_qrows = val.query_of_pair()
        else:  # no streaming pass will read the passive rows: check them here
            _check_rows(docs, self.active, batch_size)

    @property
    def n_passive(self) -> int:
        extra = 0 if self.extra_passive is None else self.extra_passive.shape[0]
        return self.n_docs - self.active.size + extra

    def _gather_unit_rows(self, docs: np.ndarray) -> np.ndarray:
        """The active rows of ``docs``, unit-normalised, as a new float32 array.

        Gathered, checked and normalised a few rows at a time so that each row is read from
        memory once and written once (a memmap's pages are dropped after reading); ``g_norm``
        and ``g_dot_v`` are filled from the same blocks.
        """
        rows = self.active
        n_tr = self.n_train_rows
        out = np.empty((rows.size, docs.shape[1]), dtype=np.float32)
        sq = np.empty(rows.size, dtype=np.float32)
        step = max(1, _CACHE_ELEMENTS // max(docs.shape[1], 1))
        is_memmap = isinstance(docs, np.memmap)
        with np.errstate(all="ignore"):  # rows that are not finite or not normal: see below
            for s0 in range(0, rows.size, step):
                part = rows[s0 : s0 + step]
                sl = slice(s0, s0 + part.size)
                block = out[sl]
                if is_memmap or docs.dtype != np.float32:
                    block[...] = docs[part]
                    if is_memmap:
                        _release_pages(docs, int(part.min()), int(part.max()) + 1)
                else:  # rows are in range: "clip" skips take's buffered bounds-checked copy
                    np.take(docs, part, axis=0, out=block, mode="clip")
                np.einsum("ij,ij->i", block, block, out=sq[sl])
                np.divide(block, np.sqrt(sq[sl])[:, None], out=block)
                if s0 < n_tr:  # training answers come first
                    gl = slice(s0, min(sl.stop, n_tr))
                    g = self.g[gl]
                    np.sqrt(np.einsum("ij,ij->i", g, g), out=self.g_norm[gl])
                    np.einsum("ij,ij->i", g, block[: gl.stop - s0], out=self.g_dot_v[gl])
        # Rows whose squared norm is not a normal finite float32 (NaN/inf, all zeros, or tiny
        # or huge values): checked, and normalised again in float64.
        bad = np.flatnonzero(~(np.isfinite(sq) & (sq >= 1e-36)))
        if bad.size:
            raw = np.asarray(docs[rows[bad]], dtype=np.float32)
            norms = _refuse_bad_rows(raw, rows[bad], "doc_embeddings")
            out[bad] = (raw / norms[:, None]).astype(np.float32)
            in_train = bad[bad < n_tr]
            self.g_dot_v[in_train] = np.einsum("ij,ij->i", self.g[in_train], out[in_train])
        return out

    def block_scores(self, blk: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(S, T)`` of the validation queries in ``blk``.

        ``S = q.v`` for every active row and ``T = q.w`` for the training-answer rows (the
        first ``n_train_rows``, those that can move).

        Kept when the whole validation set is one block (small problems score it once for
        the answer bounds and the gamma search).
        """
        cache = self.__dict__.get("_scores_cache")
        if cache is not None and cache[0] == (blk.start, blk.stop):
            return cache[1], cache[2]
        q = self.val.embeddings[blk]
        s, t = q @ self.v.T, q @ self.w.T
        if blk.start == 0 and blk.stop >= self.val.n_queries:
            self._scores_cache = ((blk.start, blk.stop), s, t)
        return s, t

    def pair_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(n_pairs,)`` ``S`` and ``T`` of each validation query with its answer row.

        ``T`` is 0 for answers that cannot move.
        """
        cols = self.val_cols
        has_w = cols < self.w.shape[0]
        if self.val.n_queries * self.active.size <= _BLOCK_ELEMENTS:
            s, t = self.block_scores(slice(0, self.val.n_queries))
            s_pairs = s[self.val_qrows, cols]
            t_pairs = np.zeros(cols.size, dtype=np.float32)
            t_pairs[has_w] = t[self.val_qrows[has_w], cols[has_w]]
        else:
            out = []
            for vectors, pairs in (
                (self.v, np.arange(cols.size)),
                (self.w, np.flatnonzero(has_w)),
            ):
                dots = np.zeros(cols.size, dtype=np.float32)
                step = max(1, _BLOCK_ELEMENTS // (4 * self.dim))
                for s0 in range(0, pairs.size, step):
                    part = pairs[s0 : s0 + step]
                    q = self.val.embeddings[self.val_qrows[part]]
                    dots[part] = np.einsum("ij,ij->i", q, vectors[cols[part]])
                out.append(dots)
            s_pairs, t_pairs = out
        return s_pairs, t_pairs

    def stream(self, stop_above: np.ndarray | None = None) -> None:
        """Set ``passive_top``: ``(n_val, k)`` best cosine scores over passive rows.

        Args:
            stop_above: optional ``(n_val,)`` bounds; a query whose k-th best passive score
                exceeds its bound is a miss at every gamma and stops being scored (its
                ``passive_top`` is then a partial, still exceeding the bound).
        """
        queries = self.val.embeddings
        best = np.full((queries.shape[0], self.k), -np.inf, dtype=np.float32)
        if self.passive_scores is not None:
            best[:] = self.passive_scores
        is_active = np.zeros(self.n_docs, dtype=bool)
        is_active[self.active] = True
        alive = np.arange(queries.shape[0])
        alive = _stream_top(self.docs, is_active, queries, best, alive, stop_above, self.batch_size)
        if self.extra_passive is not None and self.extra_passive.shape[0]:
            none_active = np.zeros(self.extra_passive.shape[0], dtype=bool)
            _stream_top(
                self.extra_passive,
                none_active,
                queries,
                best,
                alive,
                stop_above,
                self.batch_size,
                "nontrain_embeddings",
            )
        self.passive_top = best

    def query_blocks(self, n_cols: int) -> list[slice]:
        n_val = self.val.n_queries
        rows = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
        return [slice(s, min(s + rows, n_val)) for s in range(0, n_val, rows)]


def _release_pages(
    arr: np.ndarray, start_row: int | None = None, stop_row: int | None = None
) -> None:
    """Drop the pages of a read-only ``np.memmap`` from this process's resident set.

    Streaming a memory-mapped corpus would otherwise keep every page read mapped, so RSS
    would grow to the corpus size. Best effort: a no-op for anything but a C-contiguous
    memmap whose mapping numpy exposes.
    """
    mm = getattr(arr, "_mmap", None)
    if mm is None or not isinstance(arr, np.memmap) or not arr.flags.c_contiguous:
        return
    try:
        import mmap

        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        row_bytes = arr.strides[0] if arr.ndim else arr.itemsize
        first = arr.ctypes.data - base + (start_row or 0) * row_bytes
        last = arr.ctypes.data - base + (arr.shape[0] if stop_row is None else stop_row) * row_bytes
        page = mmap.PAGESIZE
        first -= first % page
        mm.madvise(mmap.MADV_DONTNEED, first, max(0, min(last, len(mm)) - first))
    except (AttributeError, ValueError, OSError, BufferError, TypeError):  # pragma: no cover
        return


def _check_rows(docs: np.ndarray, active: np.ndarray, batch_size: int) -> None:
    """Raise ``ValueError`` for a passive row that holds NaN/inf or is all zeros."""
    is_active = np.zeros(docs.shape[0], dtype=bool)
    is_active[active] = True
    rows = max(1, min(batch_size, _STREAM_BLOCK // max(docs.shape[1], 1)))
    for start in range(0, docs.shape[0], rows):
        stop = min(start + rows, docs.shape[0])
        if is_active[start:stop].all():
            continue
        passive = np.flatnonzero(~is_active[start:stop])
        block = np.asarray(docs[start + passive], dtype=np.float32)
        _release_pages(docs, start, stop)
        _refuse_bad_rows(block, start + passive, "doc_embeddings")


def _stream_top(
    docs: np.ndarray,
    is_active: np.ndarray,
    queries: np.ndarray,
    best: np.ndarray,
    alive: np.ndarray,
    stop_above: np.ndarray | None,
    batch_size: int,
    name: str = "doc_embeddings",
) -> np.ndarray:
    """Fold the passive rows of ``docs`` into ``best`` (in place); return the live queries."""
    k = best.shape[1]
    n_docs = docs.shape[0]
    if is_active.all() or alive.size == 0:
        return alive
    rows = max(1, min(batch_size, _STREAM_BLOCK // max(queries.shape[0], 1)))
    live_q = queries[alive]
    for start in range(0, n_docs, rows):
        stop = min(start + rows, n_docs)
        passive = ~is_active[start:stop]
        if not passive.any():
            continue
        offsets = None
        if passive.all():
            block = np.array(docs[start:stop], dtype=np.float32)  # a copy: pages dropped next
        else:
            offsets = np.flatnonzero(passive)
            if offsets.size * 2 < stop - start:  # mostly active rows: gather the rest
                block = np.asarray(docs[start + offsets], dtype=np.float32)
            else:
                block = np.array(docs[start:stop], dtype=np.float32)[offsets]
        _release_pages(docs, start, stop)
        ids = start + (offsets if offsets is not None else np.arange(block.shape[0]))
        norms = _refuse_bad_rows(block, ids, name)
        block = (block / norms[:, None]).astype(np.float32, copy=False)
        scores = live_q @ block.T
        if k == 1:
            best[alive, 0] = np.maximum(best[alive, 0], scores.max(axis=1))
        else:
            merged = np.concatenate([best[alive], scores], axis=1)
            part = np.partition(merged, merged.shape[1] - k, axis=1)[:, -k:]
            best[alive] = np.sort(part, axis=1)[:, ::-1]
        if stop_above is not None:
            done = best[alive, k - 1] > stop_above[alive]
            if done.any():
                alive = alive[~done]
                if alive.size == 0:
                    break
                live_q = queries[alive]
    return alive


class _NudgeBase:
    """Shared ``fit`` plumbing: checks, validation split, fitted attributes."""

    similarity: ClassVar[str]
    _variant: ClassVar[str]

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
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        doc_embeddings: np.ndarray,
        train: QuerySet | Any,
        val: QuerySet | Any | None = None,
        *,
        passive_scores: np.ndarray | None = None,
        _extra_passive: np.ndarray | None = None,
        _dense_output: bool = False,
    ) -> _NudgeBase:
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
        docs = check_matrix(doc_embeddings, "doc_embeddings", check_finite=False)
        n_docs, dim = docs.shape
        batch_size = check_positive_int(self.batch_size, "batch_size")
        fixed = None if self.gamma is None else check_gamma(self.gamma, upper=self._gamma_upper())
        train_qs = _as_queryset(train, "train").checked(n_docs, dim, "train")
        val_qs = None if val is None else _as_queryset(val, "val").checked(n_docs, dim, "val")
        if val_qs is None and fixed is None:
            train_qs, val_qs = train_qs.split(self.val_fraction, random_state=self.random_state)
            logger.info(
                "split %d validation queries off %d training queries (val_fraction=%s)",
                val_qs.n_queries,
                train_qs.n_queries + val_qs.n_queries,
                self.val_fraction,
            )
        if passive_scores is not None:
            if val is None:
                msg = "passive_scores needs an explicit val (they score the validation queries)"
                raise ValueError(msg)
            k = self._val_k()
            n_raw = (
                val.n_queries if isinstance(val, QuerySet) else _as_queryset(val, "val").n_queries
            )
            passive_scores = np.asarray(passive_scores, dtype=np.float32)
            if (
                passive_scores.ndim != 2
                or passive_scores.shape[0] != n_raw
                or passive_scores.shape[1] < k
            ):
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
            if val_qs.n_queries != n_raw:  # queries without answers were dropped
                passive_scores = passive_scores[_kept_queries(val, n_raw)]
        extra = None
        if _extra_passive is not None:
            extra = check_matrix(
                _extra_passive, "nontrain_embeddings", dim=dim, allow_empty=True, check_finite=False
            )
        problem = _Problem(docs, train_qs, val_qs, self._val_k(), batch_size, extra, passive_scores)
        if _dense_output:  # the moved rows are written straight into the whole output
            problem.dense = np.empty((n_docs, dim), dtype=np.float32)
        self._fit_problem(problem, fixed)
        if problem.dense is not None:
            _normalize_into(docs, problem.dense, skip=self.changed_rows_)
            self._embeddings_cache = problem.dense
        self._docs = docs
        self.n_docs_ = n_docs
        self.n_features_in_ = dim
        self.n_train_queries_ = train_qs.n_queries
        self.n_val_queries_ = 0 if val_qs is None else val_qs.n_queries
        logger.info(
            "%s: gamma=%s, validation score=%s, %d of %d rows moved",
            type(self).__name__,
            self.gamma_,
            self.val_score_,
            self.changed_rows_.size,
            n_docs,
        )
        return self

    def _val_k(self) -> int:
        return 1

    def _gamma_upper(self) -> float | None:
        return None

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
        cached = getattr(self, "_embeddings_cache", None)
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
        """Record the fit; ``vectors`` is ``None`` when they went into ``problem.dense``."""
        self.gamma_ = float(gamma) + 0.0  # no -0.0
        self.val_score_ = None if val_score is None else float(val_score)
        self.changed_rows_ = rows.astype(np.int64)
        self._changed_embeddings = (
            None if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32)
        )
        self._embeddings_cache = None

    def _fit_problem(self, problem: _Problem, fixed: float | None) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring
    def _val_recall(
        self,
        problem: _Problem,
        n_moved: int,
        coeffs: tuple[np.ndarray, np.ndarray],
        bounds: _Arc | None = None,
    ) -> np.ndarray:
        """Validation recall@k (denominator ``min(#answers, k)``) for each coefficient set.

        The score of validation query ``q`` for moved active row ``j`` is
        ``alpha_j * (q.v_j) + beta_j * (q.w_j)`` (``w``: the solver's second basis, see
        :meth:`_Problem.block_scores`); other rows keep ``q.v_j``.

        Args:
            problem: the gathered problem.
            n_moved: rows ``0..n_moved-1`` of the problem are those whose score depends on
                gamma (the training-answer rows; see :class:`_Problem`).
            coeffs: ``(alpha, beta)``, two ``(n_moved, n_gamma)`` float32 arrays: column ``c``
                holds the coefficients at candidate gamma ``c``.
            bounds: for NUDGE-N, the rows' arcs (:class:`_Arc`). With
                ``val_k == 1`` only (query, row) pairs whose upper bound reaches the query's
                lower bound on its top-1 score are scored per gamma (exact pruning).

        Returns:
            ``(n_gamma,)`` float64 validation scores.
        """
        val, k = problem.val, problem.k
        n_active = problem.active.size
        moved_idx = np.arange(n_moved)
        static_idx = np.arange(n_moved, n_active)
        pos_in_moved = np.full(n_active, -1, dtype=np.int64)
        pos_in_moved[moved_idx] = np.arange(moved_idx.size)
        pos_in_static = np.full(n_active, -1, dtype=np.int64)
        pos_in_static[static_idx] = np.arange(static_idx.size)
        n_ans = np.diff(val.indptr)
        denom = np.minimum(n_ans, k).astype(np.float64)
        totals = np.zeros(coeffs[0].shape[1], dtype=np.float64)
        pair_q, pair_col = problem.val_qrows, problem.val_cols

        for blk in problem.query_blocks(n_active + k):
            q = val.embeddings[blk]
            b = q.shape[0]
            lo, hi = np.searchsorted(pair_q, [blk.start, blk.stop])
            pq = pair_q[lo:hi] - blk.start
            pc = pair_col[lo:hi]
            s_all, t_all = problem.block_scores(blk)
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
                    problem.passive_top[blk, 0],
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
            if k == 1 and bounds is not None:
                totals += _pruned_hits(
                    s_moved,
                    t_moved,
                    flat_mov,
                    coeffs,
                    bounds,
                    best_non_static,
                    best_ans_static,
                    np.maximum(best_non_static, best_ans_static),
                )
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
                    all_scores = np.concatenate(
                        [problem.passive_top[blk], s_static_blk, scores], axis=1
                    )
                    all_lab = np.concatenate(
                        [np.zeros((b, k), dtype=bool), lab_static, moved_lab], axis=1
                    )
                    top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
                    hits = np.take_along_axis(all_lab, top, axis=1).sum(axis=1)
                    totals[c] += float((hits / denom[blk]).sum())
        return totals / val.n_queries


class NudgeN(_NudgeBase):
    """NUDGE-N: tuned embeddings stay unit-norm; use with cosine stores.

    Each document that answers training queries moves on the unit sphere toward the sum of
    those queries, by at most ``sqrt(gamma)`` in Euclidean distance (``gamma <= 2``).

    Args:
        gamma: a fixed step size; ``None`` (default) picks it from ``gammas`` on validation.
        gammas: candidate values searched when ``gamma`` is ``None``; default
            :data:`DEFAULT_GAMMAS`, the reference's ``0, 0.02, ..., 0.48``. Ties go to the
            smaller value.
        val_k: validation picks the gamma with the best recall@``val_k``.
        val_fraction: share of training queries split off for validation when ``val`` is
            not given (seeded by ``random_state``).
        random_state: seed for that split.
        batch_size: documents per block in the streaming pass over the corpus.
        show_progress: show a progress bar over the gamma candidates.

    Attributes:
        gamma_: the step size used.
        val_score_: validation recall@``val_k`` at ``gamma_`` (``None`` without validation).
        changed_rows_: ``(n_changed,)`` int64 rows that moved.
        changed_embeddings_: ``(n_changed, dim)`` float32 new vectors of those rows.
        embeddings_: ``(n_docs, dim)`` float32, all rows (built on access).
        gamma_scores_: ``{gamma: validation score}`` for every candidate searched.

    Example:
        >>> train = QuerySet(train_q, train_answers)  # doctest: +SKIP
        >>> solver = NudgeN().fit(doc_embeddings, train)  # doctest: +SKIP
        >>> solver.similarity
        'cosine'
    """

    similarity: ClassVar[str] = "cosine"
    _variant: ClassVar[str] = "n"

    def __init__(
        self,
        *,
        gamma: float | None = None,
        gammas: Sequence[float] | None = None,
        val_k: int = 1,
        val_fraction: float = 0.1,
        random_state: int | None = 0,
        batch_size: int = 4096,
        show_progress: bool = False,
    ):
        super().__init__(
            gamma=gamma,
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

    @staticmethod
    def _geometry(problem: _Problem) -> dict[str, np.ndarray]:
        """Per training-answer row: where it moves, and the circle it moves on.

        With ``c = g.v``, ``p = |g - c v|`` and ``u = (g - c v) / p``, a row moves on the unit
        circle through ``v`` and ``u``; ``phi`` is the angle from ``v`` to ``g``, so
        ``unit(g) = cos(phi) v + sin(phi) u``, reached at ``gamma_full``. Rows that do not move
        get ``phi = 0`` and ``gamma_full = 0``: "snapped" to ``v``.

        Returns:
            ``(n_train_rows,)`` arrays: ``moves``, ``phi``, ``gamma_full``, ``inv_p`` and
            ``c_over_p`` (0 where the row does not move), so that
            ``q.u = (q.g) inv_p - (q.v) c_over_p``.
        """
        n_tr = problem.n_train_rows
        v, g = problem.v[:n_tr], problem.g
        c = problem.g_dot_v
        # |g - c v| = sqrt(|g|^2 - c^2) (|v| = 1); where that difference cancels in float32
        # (g nearly parallel to v) it is recomputed from the vector itself.
        gn = problem.g_norm.astype(np.float64)
        c64 = c.astype(np.float64)
        p2 = gn * gn - c64 * c64
        p = np.sqrt(np.maximum(p2, 0.0))
        risky = np.flatnonzero(p2 <= 1e-3 * gn * gn)
        step = max(1, _BLOCK_ELEMENTS // max(problem.dim, 1))
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

    @staticmethod
    def _answer_bounds(problem: _Problem, n_moved: int, arc: _Arc) -> np.ndarray:
        """``(n_val,)``: a bound on the best score any answer of each query reaches.

        A moved answer scores at most its :func:`_arc_reach`; one that does not move keeps
        ``S``. A query whose best passive score beats this is a miss at every gamma, so the
        streaming pass can stop scoring it.

        Args:
            problem: the gathered problem.
            n_moved: the first ``n_moved`` active rows can move.
            arc: the rows' arcs.
        """
        s, t = problem.pair_scores()
        cols = problem.val_cols
        bound = s.astype(np.float32, copy=True)
        moved = cols < n_moved
        if moved.any():
            reach = _arc_reach(arc, s[moved], t[moved], cols[moved])
            bound[moved] = reach + np.float32(_BOUND_SLACK)
        out = np.full(problem.val.n_queries, -np.inf, dtype=np.float32)
        np.maximum.at(out, problem.val_qrows, bound)
        return out

    @staticmethod
    def _step(gamma: float) -> tuple[float, float]:
        return 1.0 - gamma / 2.0, math.sqrt(max(gamma * (4.0 - gamma), 0.0)) / 2.0

    def _fit_problem(self, problem: _Problem, fixed: float | None) -> None:
        # A moved row is a v + b u on the unit circle through v and unit(g), with
        # u = (g - c v) / p: in the (v, g) basis, alpha v + beta g with alpha = a - b c / p and
        # beta = b / p, so a validation query scores alpha S + beta T (S = q.v, T = q.g). A row
        # that has reached unit(g) stays there (alpha = 0, beta = 1 / |g|); rows that do not
        # move keep alpha = 1, beta = 0.
        geo = self._geometry(problem)
        moves, inv_p, c_over_p = geo["moves"], geo["inv_p"], geo["c_over_p"]
        full = geo["gamma_full"]
        problem.w = problem.g

        candidates = [fixed] if fixed is not None else self._candidates()
        gam = np.asarray(candidates, dtype=np.float64)
        a, b = (np.asarray(x, dtype=np.float32) for x in zip(*map(self._step, candidates)))
        snap = gam[None, :] >= full[:, None]  # (n_tr, n_gamma); rows that do not move: all
        with np.errstate(divide="ignore"):
            inv_g = np.where(moves, 1.0 / problem.g_norm, 0.0).astype(np.float32)
        stay = (~moves).astype(np.float32)  # alpha once snapped: 0 (at g), 1 (never moved)
        alphas = np.where(snap, stay[:, None], a[None, :] - b[None, :] * c_over_p[:, None])
        betas = np.where(snap, inv_g[:, None], b[None, :] * inv_p[:, None])
        coeffs = (alphas, betas)
        scores: np.ndarray | None = None
        n_tr = problem.n_train_rows
        # Coefficients at the largest gamma, and the angle each row has travelled by then
        # (phi where it snaps to g): they bound every row's score over the whole grid.
        top = int(np.argmax(gam))
        theta_top = np.where(
            snap[:, top], geo["phi"], np.float32(math.atan2(b[top], a[top]))
        ).astype(np.float32)
        bounds = _Arc(alphas[:, top].copy(), betas[:, top].copy(), theta_top, inv_p, c_over_p)
        if problem.val is not None:
            problem.stream(self._answer_bounds(problem, n_tr, bounds))
        if problem.val is not None and (fixed is None or problem.val.n_queries):
            scores = self._val_recall(problem, n_tr, coeffs, bounds)
            best = int(np.argmax(scores))  # first maximum: the smallest gamma among ties
            self.gamma_scores_ = dict(zip(candidates, scores.tolist()))
        else:
            best = 0
            self.gamma_scores_ = {}
        gamma = candidates[best]
        val_score = None if scores is None else scores[best]
        moved = np.flatnonzero(moves)
        if gamma == 0 or moved.size == 0:
            self._set_result(
                gamma, val_score, np.zeros(0, dtype=np.int64), np.zeros((0, problem.dim))
            )
            return
        new = _combine(problem, moved, alphas[:, best], betas[:, best])
        self._set_result(gamma, val_score, problem.active[moved], new)


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
        show_progress: unused by the exact search (kept for a uniform signature).

    Attributes:
        gamma_: the step size used.
        val_score_: validation hit@1 at ``gamma_`` (``None`` without validation).
        changed_rows_: ``(n_changed,)`` int64 rows that moved.
        changed_embeddings_: ``(n_changed, dim)`` float32 new vectors (not unit-norm).
        embeddings_: ``(n_docs, dim)`` float32, all rows (built on access).
    """

    similarity: ClassVar[str] = "dot"
    _variant: ClassVar[str] = "m"

    def _gamma_upper(self) -> float:
        return 1e18  # the output has norm ~gamma: keep it far inside float32

    def _fit_problem(self, problem: _Problem, fixed: float | None) -> None:
        n_moved = problem.n_train_rows
        moves = problem.g_norm > 0  # a zero sum of training queries gives no direction
        # w = -unit(g) (0 where g = 0): a row scores q.v - gamma (q.w) = q.v + gamma q.unit(g).
        neg_norm = np.where(moves, -problem.g_norm, 1.0)  # g = 0 rows stay 0
        w = problem.g

        step = max(1, _CACHE_ELEMENTS // max(problem.dim, 1))
        for s0 in range(0, n_moved, step):
            sl = slice(s0, s0 + step)
            np.divide(w[sl], neg_norm[sl, None], out=w[sl])
        problem.w = w
        if fixed is not None:
            gamma = fixed
            val_score = None
            if problem.val is not None:
                problem.stream()
                alpha = np.ones((n_moved, 1), dtype=np.float32)
                beta = np.full((n_moved, 1), -gamma, dtype=np.float32)
                val_score = float(self._val_recall(problem, n_moved, (alpha, beta))[0])
        else:
            gamma, count = self._sweep(problem, n_moved)
            # Closed intervals of two answers of one query can both cover gamma (ties).
            val_score = min(count, problem.val.n_queries) / problem.val.n_queries
        if gamma == 0 or not moves.any():
            self._set_result(
                gamma, val_score, np.zeros(0, dtype=np.int64), np.zeros((0, problem.dim))
            )
            return
        moved = np.flatnonzero(moves)
        ones = np.ones(n_moved, dtype=np.float32)
        new = _combine(problem, moved, ones, np.full(n_moved, -gamma, dtype=np.float32))
        self._set_result(gamma, val_score, problem.active[moved], new)

    @staticmethod
    def _sweep(problem: _Problem, n_moved: int) -> tuple[float, int]:
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
        n_val = problem.val.n_queries
        low, high, ok, s_x, g_x = _pair_intervals(problem, n_moved)
        if problem.n_passive * n_val > _EARLY_STOP_SCORES:
            reach = np.where(g_x > 0, s_x - low * g_x, np.where(g_x < 0, s_x - high * g_x, s_x))
            reach[~ok] = -np.inf
            bound = np.full(n_val, -np.inf, dtype=np.float64)
            np.maximum.at(bound, problem.val_qrows, reach)
            problem.stream(bound.astype(np.float32))
        else:
            problem.stream()
        # The passive rows act as one more row per query (score = best passive, G = 0); an
        # interval is an intersection of constraints, so its constraint is folded in here.
        s_dif = problem.passive_top[problem.val_qrows, 0] - s_x.astype(np.float32)
        g_dif = -g_x.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            alpha = s_dif / (g_dif + np.float32(_SLOPE_EPS))
        low = np.where(g_dif > 0, np.maximum(low, alpha), low)
        high = np.where(g_dif < 0, np.minimum(high, alpha), high)
        ok &= ~((g_dif == 0) & (s_dif > 0)) & (high >= low)
        return _most_covered_point(low[ok], high[ok])


def _combine(
    problem: _Problem, rows: np.ndarray, alpha: np.ndarray, beta: np.ndarray
) -> np.ndarray | None:
    """``alpha_j v_j + beta_j w_j`` for the training-answer ``rows``.

    ``alpha``/``beta`` hold one value per training-answer row. Computed a few rows at a time
    (the temporary stays in cache). Returns a new float32 array, or ``None`` after writing
    the vectors into ``problem.dense`` (at their document rows) when that is set.
    """
    dense = problem.dense
    out = None if dense is not None else np.empty((rows.size, problem.dim), dtype=np.float32)
    whole = rows.size == problem.n_train_rows  # then rows == arange: use slices, not gathers
    a, b = (alpha, beta) if whole else (alpha[rows], beta[rows])
    step = max(1, _CACHE_ELEMENTS // max(problem.dim, 1))
    buf = np.empty((min(step, rows.size), problem.dim), dtype=np.float32)
    tmp = np.empty_like(buf)
    for s0 in range(0, rows.size, step):
        sl = slice(s0, min(s0 + step, rows.size))
        src = sl if whole else rows[sl]
        n = sl.stop - sl.start
        block = buf[:n] if dense is not None else out[sl]
        np.multiply(problem.w[src], b[sl, None], out=block)
        block += np.multiply(problem.v[src], a[sl, None], out=tmp[:n])
        if dense is not None:
            dense[problem.active[rows[sl]]] = block
    return out


def _normalize_into(docs: np.ndarray, out: np.ndarray, skip: np.ndarray) -> None:
    """Write the unit-normalised rows of ``docs`` into ``out``, except the rows in ``skip``.

    All-zero rows are written as zeros. Reads the corpus in blocks (a memmap is streamed).
    """
    n_docs, dim = docs.shape

    def unit(block: np.ndarray) -> np.ndarray:
        norms = _row_norms(block)
        norms[norms == 0] = 1
        return (block / norms[:, None]).astype(np.float32, copy=False)

    keep = np.ones(n_docs, dtype=bool)
    keep[skip] = False
    if skip.size * 2 > n_docs:  # most rows are skipped: gather the others
        rest = np.flatnonzero(keep)
        step = max(1, _CACHE_ELEMENTS // max(dim, 1))
        for s0 in range(0, rest.size, step):
            part = rest[s0 : s0 + step]
            out[part] = unit(np.asarray(docs[part], dtype=np.float32))
        return
    rows = max(1, _BLOCK_ELEMENTS // max(dim, 1))  # contiguous blocks (a memmap streams)
    for start in range(0, n_docs, rows):
        mine = keep[start : start + rows]
        block = np.asarray(docs[start : start + rows], dtype=np.float32)
        if mine.all():
            out[start : start + rows] = unit(block)
        else:
            out[start : start + rows][mine] = unit(block[mine])


def _pair_intervals(problem: _Problem, n_moved: int) -> tuple[np.ndarray, ...]:
    """NUDGE-M winning interval ``[low, high]`` of every validation pair, over active rows.

    Args:
        problem: the gathered problem.
        n_moved: the first ``n_moved`` active rows move; ``problem.w`` holds their
            ``-unit(g)``, so ``G = q.w`` (0 for the other rows).

    Returns:
        ``low``, ``high`` (float64), ``ok`` (non-empty), ``s_x``, ``g_x`` per pair.
    """
    n_active = problem.active.size
    n_pairs = problem.val_qrows.size
    low_all = np.zeros(n_pairs)
    high_all = np.full(n_pairs, np.inf)
    ok_all = np.zeros(n_pairs, dtype=bool)
    s_all = np.zeros(n_pairs)
    g_all = np.zeros(n_pairs)
    pair_q, pair_col = problem.val_qrows, problem.val_cols
    for blk in problem.query_blocks(n_active):
        s, t = problem.block_scores(blk)
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
            alpha = s_dif / (g_dif + np.float32(_SLOPE_EPS))
        pos = g_dif > 0
        neg = g_dif < 0
        low = np.maximum(np.where(pos, alpha, -np.inf).max(axis=1), 0.0)
        high = np.where(neg, alpha, np.inf).min(axis=1)
        blocked = ((g_dif == 0) & (s_dif > 0)).any(axis=1)
        low_all[lo:hi], high_all[lo:hi] = low, high
        ok_all[lo:hi] = ~blocked & (high >= low)
        s_all[lo:hi], g_all[lo:hi] = s_x[:, 0], g_x[:, 0]
    return low_all, high_all, ok_all, s_all, g_all


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
    chunk = max(1, _CACHE_ELEMENTS // n)
    buf_p = np.empty((min(chunk, b), n), dtype=np.float32)
    buf_s = np.empty_like(buf_p)
    every = slice(0, n)
    for r0 in range(0, b, chunk):
        r1 = min(r0 + chunk, b)
        sc, low, mask = s[r0:r1], lower[r0:r1], cand[r0:r1]
        near = sc.max(axis=1) - np.float32(_NEAR_BEST)
        np.greater_equal(sc, near[:, None], out=mask)
        r, c = np.divmod(np.flatnonzero(mask), n)  # (2-D np.nonzero is several times slower)
        np.maximum.at(low, r, floor(r + r0, c))
        low_sq = np.where(low > _BOUND_SLACK, (low - _BOUND_SLACK) ** 2, -1.0).astype(np.float32)
        upper_sq = _perp(arc, sc, t[r0:r1], every, out=buf_p[: r1 - r0], tmp=buf_s[: r1 - r0])
        np.multiply(upper_sq, upper_sq, out=upper_sq)
        upper_sq += np.multiply(sc, sc, out=buf_s[: r1 - r0])
        np.greater_equal(upper_sq, low_sq[:, None], out=mask)
    keys = np.flatnonzero(cand)  # = row * n + col, in row-major order
    rows, cols = np.divmod(keys, n)
    # The exact bound on the survivors.
    s_c, t_c = s[rows, cols], t[rows, cols]
    upper = _arc_reach(arc, s_c, t_c, cols)
    keep = np.flatnonzero(upper >= lower[rows] - _BOUND_SLACK)
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
    step = max(1, _BLOCK_ELEMENTS // max(s_c.size, 1))  # gammas scored together
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


def _kept_queries(val: Any, n_raw: int) -> np.ndarray:
    """Rows of the raw validation set that keep at least one answer (as ``checked`` does)."""
    raw = val if isinstance(val, QuerySet) else _as_queryset(val, "val")
    return np.flatnonzero(np.diff(raw.indptr) > 0)


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
