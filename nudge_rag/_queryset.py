"""Which documents answer which query: :class:`Relevance` (CSR) and :class:`QuerySet`.

:class:`Relevance` is the one sparse structure for "query ``i`` is answered by document rows
``indices[indptr[i]:indptr[i + 1]]``", with a grade per pair (1 when not graded). Metrics
read it as judgements, the solver as training answers, search as rows to exclude.
:class:`QuerySet` is query embeddings plus a :class:`Relevance`, one row per query.

Both keep each query's documents sorted by row and unique, so no dense
``(n_queries, n_docs)`` label matrix is ever needed: membership is one ``searchsorted`` on
``query * n_docs + doc`` keys.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from nudge_rag._validation import (
    _int_vector,
    check_answer_range,
    check_answers,
    check_csr,
    check_finite_rows,
    check_matrix,
    row_sq_norms,
)

logger = logging.getLogger(__name__)

__all__ = ["Relevance", "QuerySet", "as_relevance", "row_index"]

#: Larger query norms would overflow float32 in q . (sum of training queries).
MAX_QUERY_NORM = 1e15


# ====================================================================== Relevance
@dataclass(frozen=True, eq=False, init=False)
class Relevance:
    """Graded relevance of ``n_queries`` queries to document rows, as CSR arrays.

    Row ``i`` lists the document rows relevant to query ``i``:
    ``indices[indptr[i]:indptr[i + 1]]``, with their grades at the same positions of
    ``grades``. Entries with grade 0 (judged not relevant, as in BEIR qrels) are dropped at
    construction; within each query the entries are sorted by document row.

    Args:
        indptr: ``(n_queries + 1,)`` int array, non-decreasing, starting at 0.
        indices: ``(n_pairs,)`` int array of document rows (``>= 0``).
        grades: ``(n_pairs,)`` int array of grades (``>= 0``), or ``None`` for grade 1
            everywhere (then ``grades`` is a read-only array of ones).

    Raises:
        ValueError: malformed CSR arrays, negative rows or grades, or a document listed
            twice for one query.
        TypeError: non-integer arrays.

    Example:
        >>> rel = Relevance.from_lists([[3, 7], [1]], grades=[[2, 1], [1]])
        >>> rel.n_queries, rel.n_pairs
        (2, 3)
    """

    indptr: np.ndarray
    indices: np.ndarray
    grades: np.ndarray

    def __init__(self, indptr: Any, indices: Any, grades: Any = None) -> None:
        indptr, indices = check_csr(indptr, indices, "relevance")
        if grades is not None:
            grades = _check_grades(grades, indptr, indices)
        self._set(*_canonical(indptr, indices, grades, "relevance", merge_duplicates=False)[:3])

    def _set(self, indptr: np.ndarray, indices: np.ndarray, grades: np.ndarray) -> None:
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "grades", grades)

    @classmethod
    def _of_canonical(
        cls, indptr: np.ndarray, indices: np.ndarray, grades: np.ndarray
    ) -> Relevance:
        """Wrap arrays that already are canonical (checked, sorted, unique, grades > 0)."""
        rel = object.__new__(cls)
        rel._set(indptr, indices, grades)
        return rel

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lists(
        cls,
        answers: Sequence[Sequence[int]],
        grades: Sequence[Sequence[int]] | None = None,
    ) -> Relevance:
        """Build from one list of relevant document rows per query.

        Args:
            answers: ``answers[i]`` are the document rows relevant to query ``i``.
            grades: the matching grades (same nesting), or ``None`` for grade 1.

        Raises:
            ValueError: ``grades`` nested differently from ``answers``.
        """
        lengths = np.fromiter((len(a) for a in answers), dtype=np.int64, count=len(answers))
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = np.fromiter((d for a in answers for d in a), dtype=np.int64, count=int(indptr[-1]))
        flat_grades = None
        if grades is not None:
            if len(grades) != len(answers):
                msg = (
                    f"grades must have one list per query: expected {len(answers)}, "
                    f"got {len(grades)}"
                )
                raise ValueError(msg)
            glengths = np.fromiter((len(g) for g in grades), dtype=np.int64, count=len(grades))
            if not np.array_equal(glengths, lengths):
                bad = int(np.flatnonzero(glengths != lengths)[0])
                msg = (
                    f"grades[{bad}] has {int(glengths[bad])} entries, but answers[{bad}] has "
                    f"{int(lengths[bad])}"
                )
                raise ValueError(msg)
            flat_grades = np.fromiter(
                (g for row in grades for g in row), dtype=np.int64, count=int(indptr[-1])
            )
        return cls(indptr, flat, flat_grades)

    @classmethod
    def from_dict(
        cls,
        relevance: Mapping[Hashable, Mapping[Hashable, int] | Sequence[Hashable]],
        *,
        query_ids: Sequence[Hashable] | None = None,
        doc_ids: Sequence[Hashable] | Mapping[Hashable, int] | None = None,
    ) -> Relevance:
        """Build from an id-keyed mapping, as in BEIR qrels or LlamaIndex ``relevant_docs``.

        Args:
            relevance: ``{query_id: {doc_id: grade}}`` or ``{query_id: [doc_id, ...]}``
                (grade 1).
            query_ids: the query of each row, in order; queries missing from ``relevance``
                get no relevant documents. Default: the keys of ``relevance`` in order.
            doc_ids: the id of each document row, or a ready ``{doc_id: row}`` map. Default:
                the document keys already are integer rows.

        Raises:
            ValueError: a query id in ``relevance`` that is not in ``query_ids``, or a document
                id not in ``doc_ids`` (the message names the first few).
        """
        if query_ids is None:
            query_ids = list(relevance)
        else:
            known = set(query_ids)
            unknown_q = [q for q in relevance if q not in known]
            if unknown_q:
                msg = (
                    f"relevance names {len(unknown_q)} query id(s) that are not in query_ids, "
                    f"e.g. {unknown_q[:3]!r}"
                )
                raise ValueError(msg)
        doc_index: Mapping[Hashable, int] | None
        if doc_ids is None or isinstance(doc_ids, Mapping):
            doc_index = doc_ids
        else:
            doc_index = row_index(doc_ids)  # type: ignore[arg-type]
        empty: tuple[()] = ()
        entries = [relevance.get(q, empty) for q in query_ids]
        lengths = np.fromiter((len(e) for e in entries), dtype=np.int64, count=len(entries))
        flat_docs = [d for e in entries for d in e]
        flat_grades = [g for e in entries for g in _grades_of(e)]
        if doc_index is None:
            rows = np.asarray(flat_docs, dtype=np.int64)
        else:
            unknown = [d for d in flat_docs if d not in doc_index]
            if unknown:
                msg = (
                    f"relevance names {len(unknown)} document id(s) that are not in doc_ids, "
                    f"e.g. {unknown[:3]!r}"
                )
                raise ValueError(msg)
            rows = np.fromiter((doc_index[d] for d in flat_docs), np.int64, len(flat_docs))
        indptr = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(indptr, rows, np.asarray(flat_grades, dtype=np.int64))

    # ------------------------------------------------------------------ accessors
    @property
    def n_queries(self) -> int:
        """Number of queries (rows)."""
        return int(self.indptr.size - 1)

    @property
    def n_pairs(self) -> int:
        """Number of (query, relevant document) pairs with grade > 0."""
        return int(self.indices.size)

    def n_relevant(self) -> np.ndarray:
        """``(n_queries,)`` int64: the number of relevant documents of each query."""
        return np.diff(self.indptr)

    def query_of_pair(self) -> np.ndarray:
        """``(n_pairs,)`` int64: the query row of each (query, document) pair."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), self.n_relevant())

    def subset(self, rows: Any) -> Relevance:
        """The judgements of the queries at ``rows`` (``(n,)`` int array), in that order.

        Raises:
            ValueError: a row outside ``[0, n_queries)``.
        """
        rows = _query_rows(rows, self.n_queries)
        starts, lengths = self.indptr[rows], np.diff(self.indptr)[rows]
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = _ranges(starts, lengths)
        return Relevance._of_canonical(indptr, self.indices[take], self.grades[take])

    def to_lists(self) -> list[list[int]]:
        """The relevant rows as one list per query (for display and interop, not hot paths)."""
        return [
            self.indices[a:b].tolist()
            for a, b in zip(self.indptr[:-1], self.indptr[1:], strict=True)
        ]


def as_relevance(answers: Any, name: str, *, n_queries: int) -> tuple[Relevance, int]:
    """Any accepted form of per-query document rows as a :class:`Relevance`.

    Accepted: a :class:`Relevance` or :class:`QuerySet` (used as they are), a list with one
    list of rows per query (``[[3, 7], [1]]``), a ``scipy.sparse`` ``(n_queries, n_docs)``
    matrix whose non-zeros mark answers, or an ``(indptr, indices)`` pair of int arrays. A
    document given twice for one query counts once.

    Args:
        answers: the rows, in one of the forms above.
        name: the argument's name, used in error messages.
        n_queries: the number of queries the answers must cover.

    Returns:
        ``(relevance, n_merged)``: the structure and the number of duplicate pairs merged.

    Raises:
        TypeError: an object of no accepted form, or non-integer rows.
        ValueError: a number of rows other than ``n_queries``, malformed CSR arrays or a
            negative row.
    """
    csr = _answer_csr(answers, name, n_queries=n_queries)
    if isinstance(csr, Relevance):
        return csr, 0
    indptr, indices, grades, n_merged = _canonical(*csr, None, name, merge_duplicates=True)
    return Relevance._of_canonical(indptr, indices, grades), n_merged


def _answer_csr(
    answers: Any, name: str, *, n_queries: int
) -> Relevance | tuple[np.ndarray, np.ndarray]:
    """A :class:`Relevance` as it is, or other forms as checked (not yet sorted) CSR arrays."""
    if isinstance(answers, QuerySet):
        answers = answers.relevance
    if isinstance(answers, Relevance):
        if answers.n_queries != n_queries:
            msg = (
                f"{name} has {answers.n_queries} entries, but there are {n_queries} query "
                "embeddings"
            )
            raise ValueError(msg)
        return answers
    if (
        isinstance(answers, tuple)
        and len(answers) == 2
        and all(isinstance(a, np.ndarray) for a in answers)
    ):
        return check_csr(answers[0], answers[1], name, n_queries=n_queries)
    return check_csr(*check_answers(answers, name, n_queries=n_queries), name)


# ====================================================================== QuerySet
@dataclass(frozen=True, eq=False, init=False)
class QuerySet:
    """Query embeddings with the document rows that answer them (CSR, no dense label matrix).

    Args:
        embeddings: ``(n_queries, dim)`` float32 array (float64 is converted).
        answers: the answer rows of each query: a :class:`Relevance` with ``n_queries`` rows,
            a list of lists of ints (``answers[i]`` are the document rows relevant to query
            ``i``), a ``scipy.sparse`` ``(n_queries, n_docs)`` matrix, or an
            ``(indptr, indices)`` pair of int arrays. A row given twice for one query counts
            once (reported by :meth:`checked`).

    Attributes:
        embeddings: ``(n_queries, dim)`` float32 array.
        relevance: the answers as :class:`Relevance` (sorted per query, unique; built from
            ``answers`` on first use, so that construction costs no sort).

    Example:
        >>> qs = QuerySet(np.eye(2, 4, dtype=np.float32), [[0, 3], [1]])
        >>> qs.n_queries, qs.n_pairs
        (2, 3)
    """

    embeddings: np.ndarray

    def __init__(self, embeddings: Any, answers: Any) -> None:
        emb = _check_query_embeddings(embeddings)
        object.__setattr__(self, "embeddings", emb)
        csr = _answer_csr(answers, "answers", n_queries=emb.shape[0])  # sorted on first use
        object.__setattr__(self, "_answers", csr)

    @classmethod
    def _of_checked(cls, embeddings: np.ndarray, relevance: Relevance) -> QuerySet:
        """Wrap parts that are already checked and aligned."""
        qs = object.__new__(cls)
        object.__setattr__(qs, "embeddings", embeddings)
        object.__setattr__(qs, "_answers", relevance)
        return qs

    @cached_property
    def relevance(self) -> Relevance:
        """The answers as :class:`Relevance`: one row per query, sorted, unique."""
        answers = self.__dict__["_answers"]
        if isinstance(answers, Relevance):
            return answers
        indptr, indices, grades, n_merged = _canonical(
            *answers, None, "answers", merge_duplicates=True
        )
        self.__dict__["_n_merged"] = n_merged
        return Relevance._of_canonical(indptr, indices, grades)

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
    def indptr(self) -> np.ndarray:
        """``(n_queries + 1,)`` int64 CSR row pointer (that of :attr:`relevance`)."""
        return self.relevance.indptr

    @property
    def indices(self) -> np.ndarray:
        """``(n_pairs,)`` int64 answer rows, sorted within each query (of :attr:`relevance`)."""
        return self.relevance.indices

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return int(self.embeddings.shape[0])

    @property
    def n_pairs(self) -> int:
        """Number of (query, answer) pairs."""
        return self.relevance.n_pairs

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    def answer_lists(self) -> list[list[int]]:
        """The answers as a list of lists (for display and interop; not for hot paths)."""
        return self.relevance.to_lists()

    def query_of_pair(self) -> np.ndarray:
        """``(n_pairs,)`` int64: the query row of each (query, answer) pair."""
        return self.relevance.query_of_pair()

    def subset(self, rows: Any) -> QuerySet:
        """The queries at ``rows`` (``(n,)`` int array), with their answers, in that order.

        Raises:
            ValueError: a row outside ``[0, n_queries)``.
        """
        rows = _query_rows(rows, self.n_queries)
        return QuerySet._of_checked(self.embeddings[rows], self.relevance.subset(rows))

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

        Range and dimension errors raise ``ValueError``; duplicate answers of one query
        (merged at construction) and queries without answers (dropped here) are reported with
        a logged warning.
        """
        if self.dim != dim:
            msg = (
                f"{name} query embeddings have {self.dim} dimensions, but the documents have {dim}"
            )
            raise ValueError(msg)
        check_answer_range(self.indices, self.indptr, f"{name} answers", n_docs)
        n_merged = self.__dict__.get("_n_merged", 0)
        if n_merged:
            logger.warning("%s: merged %d duplicate (query, answer) pair(s)", name, n_merged)
        counts = self.relevance.n_relevant()
        if counts.all():
            return QuerySet._of_checked(self.embeddings, self.relevance) if n_merged else self
        empty = np.flatnonzero(counts == 0)
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
        return self.subset(keep)


def row_index(ids: Sequence[str]) -> dict[str, int]:
    """``{id: row}`` for a sequence of unique ids; duplicate ids raise ``ValueError``."""
    index = {doc_id: row for row, doc_id in enumerate(ids)}
    if len(index) != len(ids):
        seen: set[str] = set()
        dup = next(d for d in ids if d in seen or seen.add(d))  # type: ignore[func-returns-value]
        msg = f"document ids must be unique, but {dup!r} appears more than once"
        raise ValueError(msg)
    return index


# ====================================================================== helpers
def _check_query_embeddings(embeddings: Any) -> np.ndarray:
    """``(n_queries, dim)`` float32, finite, with norms small enough for float32 sums."""
    emb = check_matrix(embeddings, "query embeddings", check_finite=False)
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
    return emb


def _query_rows(rows: Any, n_queries: int) -> np.ndarray:
    """``rows`` as a 1-D int64 array of query rows in ``[0, n_queries)``."""
    rows = _int_vector(np.asarray(rows).reshape(-1), "rows")
    if rows.size and (rows.min() < 0 or rows.max() >= n_queries):
        bad = int(rows[(rows < 0) | (rows >= n_queries)][0])
        msg = f"rows must be query rows in 0..{n_queries - 1}, got {bad}"
        raise ValueError(msg)
    return rows


def _check_grades(grades: Any, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    grades = _int_vector(grades, "relevance grades")
    if grades.size != indices.size:
        msg = (
            f"relevance grades must have one entry per index: expected {indices.size}, "
            f"got {grades.size}"
        )
        raise ValueError(msg)
    if grades.size and grades.min() < 0:
        pos = int(np.argmin(grades))
        query = int(np.searchsorted(indptr, pos, side="right") - 1)
        msg = (
            f"relevance grades must be >= 0, but query {query} gives document row "
            f"{int(indices[pos])} grade {int(grades[pos])}"
        )
        raise ValueError(msg)
    return grades


def _canonical(
    indptr: np.ndarray,
    indices: np.ndarray,
    grades: np.ndarray | None,
    name: str,
    *,
    merge_duplicates: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop grade-0 pairs, sort each query's rows, and merge or refuse duplicate pairs.

    Input that is already sorted and unique (the usual case) is not copied or sorted.

    Returns:
        ``(indptr, indices, grades, n_merged)``; ``grades`` is a read-only array of ones
        when ``None`` came.
    """
    n_queries = indptr.size - 1
    if grades is not None and not grades.all():  # grade 0: judged, but not relevant
        keep = grades > 0
        query = np.repeat(np.arange(n_queries, dtype=np.int64), np.diff(indptr))[keep]
        indices, grades = indices[keep], grades[keep]
        indptr = _indptr_of(query, n_queries)
    n_merged = 0
    if not _strictly_increasing_per_query(indices, indptr):
        query = np.repeat(np.arange(n_queries, dtype=np.int64), np.diff(indptr))
        indices, grades = _sorted_pairs(query, indices, grades)
        same = (query[1:] == query[:-1]) & (indices[1:] == indices[:-1])
        if same.any():
            if not merge_duplicates:
                pos = int(np.flatnonzero(same)[0])
                msg = (
                    f"{name} lists document row {int(indices[pos])} more than once for query "
                    f"{int(query[pos])}; give each (query, document) pair once"
                )
                raise ValueError(msg)
            first = np.concatenate(([True], ~same))
            n_merged = int(same.sum())
            query, indices = query[first], indices[first]
            if grades is not None:
                grades = grades[first]
            indptr = _indptr_of(query, n_queries)
    if grades is None:  # grade 1 everywhere: a read-only view, no memory per pair
        grades = np.broadcast_to(np.int64(1), indices.shape)
    return indptr, indices, grades, n_merged


def _sorted_pairs(
    query: np.ndarray, indices: np.ndarray, grades: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each query's rows (with their grades) sorted; ``query`` (sorted already) is unchanged."""
    n_bound = int(indices.max()) + 1 if indices.size else 1
    if (int(query[-1]) + 1 if query.size else 1) * n_bound >= 2**62:  # keys would overflow
        order = np.lexsort((indices, query))
        return indices[order], None if grades is None else grades[order]
    offset = query * np.int64(n_bound)
    key = offset + indices
    if grades is None:  # no payload: sorting the keys is several times faster than argsort
        key.sort()
        key -= offset
        return key, None
    order = np.argsort(key)
    return indices[order], grades[order]


def _indptr_of(query: np.ndarray, n_queries: int) -> np.ndarray:
    """``indptr`` of pairs grouped by (sorted) query row."""
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(query, minlength=n_queries), out=indptr[1:])
    return indptr


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for each start/length pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def _strictly_increasing_per_query(indices: np.ndarray, indptr: np.ndarray) -> bool:
    """Whether each query's rows are strictly increasing (so none is repeated)."""
    if indices.size < 2:
        return True
    ok = indices[1:] > indices[:-1]
    starts = indptr[1:-1]  # a new query begins at these positions: no order across them
    ok[starts[(starts > 0) & (starts < indices.size)] - 1] = True
    return bool(ok.all())


def _grades_of(entry: Mapping[Hashable, int] | Sequence[Hashable]) -> Sequence[int]:
    if isinstance(entry, Mapping):
        return list(entry.values())
    return [1] * len(entry)
