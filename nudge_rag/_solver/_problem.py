"""The problem both variants solve, gathered once from the inputs, and the corpus passes.

:class:`_Problem` splits the corpus into *active* rows (answers of a training or validation
query, gathered into memory, unit-normalised) and *passive* rows (the rest, only streamed by
:meth:`_Problem.stream` to get each validation query's best passive scores), and sums the
training queries of every row that can move (:class:`_Sums`). It is not changed after it is
built: solvers derive what they need from it (their scoring basis, the sums of a
cross-validation fold) as new arrays.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from nudge_rag._queryset import QuerySet
from nudge_rag._solver import _limits
from nudge_rag._solver._progress import progress_bar
from nudge_rag._validation import row_sq_norms

logger = logging.getLogger("nudge_rag._solver")


class _Sums(NamedTuple):
    """Training-query sums of the rows that can move, one entry per training-answer row.

    Attributes:
        g: ``(n_train_rows, dim)`` float32: the sum of the training queries each row answers.
        norm: ``(n_train_rows,)`` float32 ``|g|``.
        dot_v: ``(n_train_rows,)`` float32 ``g . v`` (``v`` the unit document row).
        rescaled: int64 rows whose sum float32 loses, rescaled to unit norm (only their
            direction matters); usually empty.
    """

    g: np.ndarray
    norm: np.ndarray
    dot_v: np.ndarray
    rescaled: np.ndarray = np.zeros(0, dtype=np.int64)


class _Problem:
    """Everything a solver needs, gathered once from the inputs.

    Active rows are ordered training answers first (``n_train_rows`` of them, the only rows
    that can move), then rows that answer validation queries only.

    Attributes:
        docs: the caller's ``(n_docs, dim)`` corpus (read, never written).
        extra_passive: optional ``(n, dim)`` rows that only compete (the reference's
            ``nontrain_embeddings``).
        active: ``(n_active,)`` int64 document rows gathered into ``v``.
        n_train_rows: how many of them answer training queries.
        v: ``(n_active, dim)`` float32 unit rows.
        sums: the training sums of the first ``n_train_rows`` rows.
        train: the training queries.
        train_cols: ``(train.n_pairs,)`` int64 active position of each training answer.
        queries_per_row: ``(n_train_rows,)`` int64 training queries each row answers.
        val_cols: the same for the validation answers (``None`` without validation).
    """

    def __init__(
        self,
        docs: np.ndarray,
        train: QuerySet,
        val: QuerySet | None,
        batch_size: int,
        extra_passive: np.ndarray | None = None,
        show_progress: bool = False,
    ):
        n_docs, dim = docs.shape
        self.n_docs, self.dim = n_docs, dim
        self.docs, self.extra_passive = docs, extra_passive
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.train = train
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
        self.val_cols = None if val is None else lookup[val.indices].astype(np.int64)
        self.train_cols = lookup[train.indices].astype(np.int64)
        self.queries_per_row = np.bincount(self.train_cols, minlength=self.n_train_rows)

        # g = sum of training queries per training-answer row, through a sparse
        # (n_train_rows x n_train) map whose columns are the training queries (so the CSC
        # indptr is train's own); as CSR, each row's sum is accumulated in place, faster than
        # CSC's scattered updates.
        assign = sp.csc_matrix(
            (np.ones(train.indices.size, dtype=np.float32), lookup[train.indices], train.indptr),
            shape=(self.n_train_rows, train.n_queries),
        )
        del lookup
        g = np.asarray(assign.tocsr() @ train.embeddings, dtype=np.float32)
        del assign
        # v = unit active rows, with |g| and g.v computed while each block is in cache.
        self.v, g_norm, g_dot_v = _gather_unit_rows(docs, self.active, g)
        tiny = _rescale_tiny_sums(g, g_norm, g_dot_v, self.v, np.arange(self.n_train_rows))
        self.sums = _Sums(g, g_norm, g_dot_v, tiny)

    @property
    def n_passive(self) -> int:
        """Rows that answer no query (streamed, never gathered), with ``extra_passive``."""
        extra = 0 if self.extra_passive is None else self.extra_passive.shape[0]
        return self.n_docs - self.active.size + extra

    def sums_without(self, queries: np.ndarray) -> _Sums:
        """The sums over the training queries other than ``queries`` (rows of ``train``).

        The total minus those queries' own sums, on the rows they answer (the other rows
        keep theirs); a row left with no query gets exactly ``g = 0`` (it does not move).
        """
        train, cols = self.train, self.train_cols
        pairs = _pair_positions(train.indptr, queries)
        fold_cols = cols[pairs]
        rows, position = np.unique(fold_cols, return_inverse=True)
        pair_query = np.repeat(np.arange(queries.size), np.diff(train.indptr)[queries])
        own = sp.csr_matrix(
            (np.ones(pairs.size, dtype=np.float32), (position, pair_query)),
            shape=(rows.size, queries.size),
        )
        left = self.queries_per_row[rows] - np.bincount(position, minlength=rows.size)
        g = self.sums.g.copy()
        part = g[rows] - own @ train.embeddings[queries]
        part[left == 0] = 0
        g[rows] = part
        norm, dot_v = self.sums.norm.copy(), self.sums.dot_v.copy()
        norm[rows] = np.sqrt(np.einsum("ij,ij->i", part, part))
        dot_v[rows] = np.einsum("ij,ij->i", part, self.v[rows])
        tiny = _rescale_tiny_sums(g, norm, dot_v, self.v, rows)
        return _Sums(g, norm, dot_v, tiny)

    def check_passive_rows(self) -> None:
        """Raise ``ValueError`` for a passive row that holds NaN/inf or is all zeros.

        For fits without a streaming pass (which checks the rows it reads).
        """
        _check_rows(self.docs, self.active, self.batch_size)

    def stream(
        self,
        queries: np.ndarray,
        k: int,
        stop_above: np.ndarray | None = None,
        start: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n_queries, k)`` best cosine scores of ``queries`` over the passive rows.

        Args:
            queries: ``(n_queries, dim)`` float32 validation query embeddings.
            k: how many best scores to keep per query (best first).
            stop_above: optional ``(n_queries,)`` bounds; a query whose k-th best passive
                score exceeds its bound is a miss at every gamma and stops being scored (its
                row is then a partial, still exceeding the bound).
            start: optional ``(n_queries, k)`` best scores over documents that are not in
                the corpus (the caller's ``passive_scores``), folded in.
        """
        best = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        if start is not None:
            best[:] = start
        is_active = np.zeros(self.n_docs, dtype=bool)
        is_active[self.active] = True
        alive = np.arange(queries.shape[0])
        n_extra = 0 if self.extra_passive is None else self.extra_passive.shape[0]
        with progress_bar(
            self.n_docs - self.active.size + n_extra,
            "nudge-rag: passive documents",
            self.show_progress,
            unit="doc",
        ) as bar:
            alive = _stream_top(
                self.docs, is_active, queries, best, alive, stop_above, self.batch_size, bar
            )
            if n_extra:
                _stream_top(
                    self.extra_passive,
                    np.zeros(n_extra, dtype=bool),
                    queries,
                    best,
                    alive,
                    stop_above,
                    self.batch_size,
                    bar,
                    "nontrain_embeddings",
                )
        return best

    def moved_vectors(
        self,
        w: np.ndarray,
        rows: np.ndarray,
        alpha: np.ndarray,
        beta: np.ndarray,
        dense: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """``alpha_j v_j + beta_j w_j`` for the training-answer ``rows``.

        ``w`` holds the solver's second basis and ``alpha``/``beta`` one value per
        training-answer row. Computed a few rows at a time (the temporary stays in cache).
        Returns a new float32 array, or ``None`` after writing the vectors into ``dense`` (an
        ``(n_docs, dim)`` output, at their document rows) when that is given.
        """
        dim = self.dim
        out = None if dense is not None else np.empty((rows.size, dim), dtype=np.float32)
        whole = rows.size == self.n_train_rows  # then rows == arange: use slices, not gathers
        a, b = (alpha, beta) if whole else (alpha[rows], beta[rows])
        step = max(1, _limits.CACHE_ELEMENTS // max(dim, 1))
        buf = np.empty((min(step, rows.size), dim), dtype=np.float32)
        tmp = np.empty_like(buf)
        for s0 in range(0, rows.size, step):
            sl = slice(s0, min(s0 + step, rows.size))
            src = sl if whole else rows[sl]
            n = sl.stop - sl.start
            block = buf[:n] if dense is not None else out[sl]
            np.multiply(w[src], b[sl, None], out=block)
            block += np.multiply(self.v[src], a[sl, None], out=tmp[:n])
            if dense is not None:
                dense[self.active[rows[sl]]] = block
        return out


def _gather_unit_rows(
    docs: np.ndarray, rows: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rows`` of ``docs``, unit-normalised, as a new float32 array; with ``|g|``, ``g.v``.

    ``g`` holds the training sums of the first ``g.shape[0]`` rows. Gathered, checked and
    normalised a few rows at a time so that each row is read from memory once and written
    once (a memmap's pages are dropped after reading); ``|g|`` and ``g.v`` are computed from
    the same blocks.
    """
    n_tr = g.shape[0]
    out = np.empty((rows.size, docs.shape[1]), dtype=np.float32)
    g_norm = np.empty(n_tr, dtype=np.float32)
    g_dot_v = np.empty(n_tr, dtype=np.float32)
    sq = np.empty(rows.size, dtype=np.float32)
    step = max(1, _limits.CACHE_ELEMENTS // max(docs.shape[1], 1))
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
                gb = g[gl]
                np.sqrt(np.einsum("ij,ij->i", gb, gb), out=g_norm[gl])
                np.einsum("ij,ij->i", gb, block[: gl.stop - s0], out=g_dot_v[gl])
    # Rows whose squared norm is not a normal finite float32 (NaN/inf, all zeros, or tiny
    # or huge values): checked, and normalised again in float64.
    bad = np.flatnonzero(~(np.isfinite(sq) & (sq >= 1e-36)))
    if bad.size:
        raw = np.asarray(docs[rows[bad]], dtype=np.float32)
        norms = _refuse_bad_rows(raw, rows[bad], "doc_embeddings")
        out[bad] = (raw / norms[:, None]).astype(np.float32)
        in_train = bad[bad < n_tr]
        g_dot_v[in_train] = np.einsum("ij,ij->i", g[in_train], out[in_train])
    return out, g_norm, g_dot_v


def _rescale_tiny_sums(
    g: np.ndarray, g_norm: np.ndarray, g_dot_v: np.ndarray, v: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Rescale, in the arrays being built, the sums at ``rows`` that float32 loses.

    Their squares underflow (and ``1 / |g|`` may overflow): only their direction matters,
    so those rows are rescaled to unit norm; ``g = 0`` stays 0. Returns the rows rescaled.
    """
    norm = g_norm[rows]
    tiny = rows[~np.isfinite(norm) | (norm < 1e-18)]
    if not tiny.size:
        return tiny
    g64 = g[tiny].astype(np.float64)
    norms = np.linalg.norm(g64, axis=1)
    nonzero = norms > 0
    g64[nonzero] /= norms[nonzero, None]
    g[tiny] = g64.astype(np.float32)
    g_norm[tiny] = np.where(nonzero, 1.0, 0.0)
    g_dot_v[tiny] = np.einsum("ij,ij->i", g[tiny], v[tiny])
    return tiny


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
    rows = max(1, min(batch_size, _limits.STREAM_BLOCK // max(docs.shape[1], 1)))
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
    bar: object,
    name: str = "doc_embeddings",
) -> np.ndarray:
    """Fold the passive rows of ``docs`` into ``best`` (in place); return the live queries."""
    k = best.shape[1]
    n_docs = docs.shape[0]
    if is_active.all() or alive.size == 0:
        return alive
    rows = max(1, min(batch_size, _limits.STREAM_BLOCK // max(queries.shape[0], 1)))
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
        bar.update(block.shape[0])
        if stop_above is not None:
            done = best[alive, k - 1] > stop_above[alive]
            if done.any():
                alive = alive[~done]
                if alive.size == 0:
                    break
                live_q = queries[alive]
    return alive


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
        step = max(1, _limits.CACHE_ELEMENTS // max(dim, 1))
        for s0 in range(0, rest.size, step):
            part = rest[s0 : s0 + step]
            out[part] = unit(np.asarray(docs[part], dtype=np.float32))
        return
    rows = max(1, _limits.BLOCK_ELEMENTS // max(dim, 1))  # contiguous blocks (a memmap streams)
    for start in range(0, n_docs, rows):
        mine = keep[start : start + rows]
        block = np.asarray(docs[start : start + rows], dtype=np.float32)
        if mine.all():
            out[start : start + rows] = unit(block)
        else:
            out[start : start + rows][mine] = unit(block[mine])


def _pair_positions(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions, in a CSR's ``indices``, of the pairs of the queries ``rows`` (in order)."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + offsets
