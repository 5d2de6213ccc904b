"""``QuerySet``: query embeddings and the document rows that answer them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudge_rag._validation import (
    check_answer_range,
    check_answers,
    check_finite_rows,
    check_matrix,
    row_sq_norms,
)

logger = logging.getLogger(__name__)

__all__ = ["QuerySet"]

#: Larger query norms would overflow float32 in q . (sum of training queries).
MAX_QUERY_NORM = 1e15


@dataclass(frozen=True, eq=False)
class QuerySet:
    """Query embeddings with their answers, stored as CSR arrays (no dense label matrix).

    Args:
        embeddings: ``(n_queries, dim)`` float32 array (float64 is converted).
        answers: the answer rows of each query: a list of lists of ints
            (``answers[i]`` are the document rows relevant to query ``i``), a ``scipy.sparse``
            ``(n_queries, n_docs)`` matrix, or an ``(indptr, indices)`` pair of int arrays.

    Example:
        >>> qs = QuerySet(np.eye(2, 4, dtype=np.float32), [[0, 3], [1]])
        >>> qs.n_queries, qs.n_pairs
        (2, 3)
    """

    embeddings: np.ndarray
    answers: Any = field(repr=False)
    indptr: np.ndarray = field(init=False, repr=False)
    indices: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        emb = check_matrix(self.embeddings, "query embeddings", check_finite=False)
        sq = row_sq_norms(emb)
        if not np.isfinite(sq).all():
            check_finite_rows(emb, "query embeddings")  # names the row with NaN or inf
        too_long = ~(sq <= np.float32(MAX_QUERY_NORM) ** 2)  # (a finite row can overflow: inf)
        if too_long.any():
            row = int(np.argmax(too_long))
            norm = np.linalg.norm(emb[row].astype(np.float64))
            msg = (
                f"query embeddings row {row} has norm {norm:.3g}: scores against sums of such "
                f"queries overflow float32 (norms above {MAX_QUERY_NORM:g} are refused); "
                "normalize the query embeddings"
            )
            raise ValueError(msg)
        indptr, indices = check_answers(self.answers, "answers", n_queries=emb.shape[0])
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "answers", None)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_ids(
        cls,
        embeddings: np.ndarray,
        answer_ids: Sequence[Sequence[str]],
        doc_ids: Sequence[str] | Mapping[str, int],
        *,
        name: str = "answer_ids",
    ) -> QuerySet:
        """Build a ``QuerySet`` whose answers are given as document ids.

        Args:
            embeddings: ``(n_queries, dim)`` float array.
            answer_ids: one list of document ids per query.
            doc_ids: the id of each document row, or a ready ``{doc_id: row}`` map.
            name: the argument name used in errors.

        Raises:
            KeyError: an answer id that is not among ``doc_ids`` (the message names it).
        """
        id_to_row = doc_ids if isinstance(doc_ids, Mapping) else row_index(doc_ids)
        lengths = np.fromiter((len(a) for a in answer_ids), dtype=np.int64, count=len(answer_ids))
        flat = [doc_id for answers in answer_ids for doc_id in answers]
        try:
            rows = np.fromiter((id_to_row[d] for d in flat), dtype=np.int64, count=len(flat))
        except KeyError as err:
            unknown = [d for d in flat if d not in id_to_row]
            msg = (
                f"{name} names {len(unknown)} document id(s) that are not in the corpus, "
                f"e.g. {unknown[:3]!r}"
            )
            raise KeyError(msg) from err
        indptr = np.zeros(len(answer_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(embeddings, (indptr, rows))

    # ------------------------------------------------------------------ accessors
    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return int(self.embeddings.shape[0])

    @property
    def n_pairs(self) -> int:
        """Number of (query, answer) pairs."""
        return int(self.indices.size)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    def answer_lists(self) -> list[list[int]]:
        """The answers as a list of lists (for display and interop; not for hot paths)."""
        return [self.indices[a:b].tolist() for a, b in zip(self.indptr[:-1], self.indptr[1:])]

    def query_of_pair(self) -> np.ndarray:
        """``(n_pairs,)`` int64: the query row of each (query, answer) pair."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), np.diff(self.indptr))

    def subset(self, rows: np.ndarray) -> QuerySet:
        """The queries at ``rows`` (int array), with their answers."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = _ranges(starts, lengths)
        return QuerySet(self.embeddings[rows], (indptr, self.indices[take]))

    def split(
        self, val_fraction: float = 0.1, *, random_state: int | None = 0
    ) -> tuple[QuerySet, QuerySet]:
        """Split off a seeded random validation part.

        Args:
            val_fraction: share of queries that go to validation (at least one query each side).
            random_state: seed for ``np.random.default_rng``.

        Returns:
            ``(train, val)``.
        """
        if not 0 < val_fraction < 1:
            msg = f"val_fraction must be in (0, 1), got {val_fraction}"
            raise ValueError(msg)
        if self.n_queries < 2:
            msg = (
                "cannot split a validation set off fewer than 2 training queries, got "
                f"{self.n_queries}; pass val= explicitly or a fixed gamma="
            )
            raise ValueError(msg)
        rng = np.random.default_rng(random_state)
        order = rng.permutation(self.n_queries)
        n_val = min(max(1, int(round(val_fraction * self.n_queries))), self.n_queries - 1)
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))

    # ------------------------------------------------------------------ cleaning
    def checked(self, n_docs: int, dim: int, name: str) -> QuerySet:
        """Check against a corpus and return a clean copy.

        Range and dimension errors raise ``ValueError``; duplicate answers of one query are
        merged and queries without answers are dropped, each with a logged warning.
        """
        if self.dim != dim:
            msg = (
                f"{name} query embeddings have {self.dim} dimensions, but the documents have {dim}"
            )
            raise ValueError(msg)
        check_answer_range(self.indices, self.indptr, f"{name} answers", n_docs)
        counts = np.diff(self.indptr)
        if counts.all() and _strictly_increasing_per_query(self.indices, self.indptr):
            return self  # the common case: no duplicates, no query without answers
        qid = self.query_of_pair()
        key = qid * np.int64(n_docs) + self.indices
        key = np.sort(key)  # sorted by (query, doc)
        uniq = key[np.append(True, key[1:] != key[:-1])] if key.size else key
        n_dup = key.size - uniq.size
        if n_dup:
            logger.warning("%s: merged %d duplicate (query, answer) pair(s)", name, n_dup)
        q_of = uniq // n_docs
        counts = np.bincount(q_of, minlength=self.n_queries)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            logger.warning(
                "%s: dropped %d quer%s with no answers (e.g. query %d)",
                name,
                empty.size,
                "y" if empty.size == 1 else "ies",
                int(empty[0]),
            )
        keep = np.flatnonzero(counts > 0)
        if keep.size == 0:
            msg = f"{name} has no query with an answer ({self.n_queries} queries, 0 answers)"
            raise ValueError(msg)
        if not n_dup and not empty.size:
            return self
        indptr = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=indptr[1:])
        return QuerySet(self.embeddings[keep], (indptr, uniq % n_docs))


def row_index(ids: Sequence[str]) -> dict[str, int]:
    """``{id: row}`` for a sequence of unique ids; duplicate ids raise ``ValueError``."""
    index = {doc_id: row for row, doc_id in enumerate(ids)}
    if len(index) != len(ids):
        seen: set[str] = set()
        dup = next(d for d in ids if d in seen or seen.add(d))  # type: ignore[func-returns-value]
        msg = f"document ids must be unique, but {dup!r} appears more than once"
        raise ValueError(msg)
    return index


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for each start/length pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def _strictly_increasing_per_query(indices: np.ndarray, indptr: np.ndarray) -> bool:
    """Whether each query's answers are strictly increasing (so none is repeated)."""
    if indices.size < 2:
        return True
    ok = indices[1:] > indices[:-1]
    starts = indptr[1:-1]  # a new query begins at these positions: no order across them
    ok[starts[(starts > 0) & (starts < indices.size)] - 1] = True
    return bool(ok.all())
