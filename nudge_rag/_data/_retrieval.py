"""The id-keyed text triple: :class:`RetrievalDataset` and :func:`split_dataset`.

``queries``, ``corpus`` and ``relevant_docs``, as in LlamaIndex's
``EmbeddingQAFinetuneDataset``, sentence-transformers and BEIR, with optional graded
relevance; reads and writes LlamaIndex's JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._data._readers import DataFileError, check_known, read_json, require_file
from nudge_rag._queryset import Relevance

logger = logging.getLogger(__name__)

__all__ = ["RetrievalDataset", "split_dataset"]


@dataclass(eq=False)
class RetrievalDataset:
    """Queries, documents and which documents answer which query, all keyed by id.

    The JSON form is exactly LlamaIndex's ``EmbeddingQAFinetuneDataset.save_json`` output
    (keys ``queries``, ``corpus``, ``relevant_docs``, ``mode``), plus a ``relevance`` key when
    grades are present; files written by LlamaIndex load as they are, and files written here
    load in LlamaIndex (it ignores the extra key).

    Args:
        queries: ``{query_id: text}``; each text a non-blank string (as in training pairs).
        corpus: ``{doc_id: text}``; each text a string.
        relevant_docs: ``{query_id: [doc_id, ...]}``; queries may be missing (no answers).
        relevance: optional grades ``{query_id: {doc_id: grade}}`` (positive ints) for pairs in
            ``relevant_docs``; a pair without a grade has grade 1.
        mode: LlamaIndex's dataset mode (``"text"``).
        source: where the data came from (a file name), used in error messages.

    Raises:
        ValueError: a blank or non-string query text, a non-string document text,
            ``relevant_docs`` or ``relevance`` naming an unknown query or document id (the
            message names the ids and ``source``), or a non-positive grade.
        TypeError: a part that is not a dict, ``relevant_docs`` values that are not lists
            of ids, or a grade that is not an integer.

    Example:
        >>> ds = RetrievalDataset({"q1": "what is x"}, {"d1": "x is y"}, {"q1": ["d1"]})
        >>> ds.n_queries, ds.n_docs
        (1, 1)
    """

    queries: dict[Hashable, str]
    corpus: dict[Hashable, str]
    relevant_docs: dict[Hashable, list[Hashable]]
    relevance: dict[Hashable, dict[Hashable, int]] | None = None
    mode: str = "text"
    source: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        for name in ("queries", "corpus", "relevant_docs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                msg = f"{name}{where} must be a dict, got {type(value).__name__}"
                raise TypeError(msg)
        self.queries = _checked_texts(self.queries, "queries", where, blank_ok=False)
        self.corpus = _checked_texts(self.corpus, "corpus", where, blank_ok=True)
        relevant: dict[Hashable, list[Hashable]] = {}
        for qid, docs in self.relevant_docs.items():
            if isinstance(docs, (str, bytes)) or not isinstance(docs, (Sequence, set)):
                msg = (
                    f"relevant_docs[{qid!r}]{where} must be a list of document ids, "
                    f"got {type(docs).__name__}"
                )
                raise TypeError(msg)
            docs = list(docs)
            bad = next((d for d in docs if not isinstance(d, Hashable)), None)
            if bad is not None:
                msg = (
                    f"relevant_docs[{qid!r}]{where} must be a list of document ids, but it "
                    f"holds {type(bad).__name__} {bad!r:.60}"
                )
                raise TypeError(msg)
            relevant[qid] = docs
        self.relevant_docs = relevant
        check_known(relevant.keys(), self.queries, f"relevant_docs{where}", "query", "queries")
        check_known(
            (d for docs in relevant.values() for d in docs),
            self.corpus,
            f"relevant_docs{where}",
            "document",
            "corpus",
        )
        if self.relevance is not None:
            self.relevance = self._checked_relevance(self.relevance, where)
        if not isinstance(self.mode, str):
            msg = f"mode{where} must be a string such as 'text', got {self.mode!r:.60}"
            raise TypeError(msg)

    def _checked_relevance(
        self, relevance: Mapping[Hashable, Mapping[Hashable, int]], where: str
    ) -> dict[Hashable, dict[Hashable, int]]:
        if not isinstance(relevance, Mapping):
            msg = f"relevance{where} must be a dict, got {type(relevance).__name__}"
            raise TypeError(msg)
        out: dict[Hashable, dict[Hashable, int]] = {}
        for qid, graded in relevance.items():
            if qid not in self.relevant_docs:
                msg = (
                    f"relevance{where} grades query id {qid!r}, which has no entry in relevant_docs"
                )
                raise ValueError(msg)
            if not isinstance(graded, Mapping):
                msg = (
                    f"relevance[{qid!r}]{where} must be a dict {{doc_id: grade}}, got "
                    f"{type(graded).__name__}"
                )
                raise TypeError(msg)
            listed = set(self.relevant_docs[qid])
            for doc_id, grade in graded.items():
                if doc_id not in listed:
                    msg = (
                        f"relevance{where} grades document {doc_id!r} for query {qid!r}, but "
                        "relevant_docs does not list it for that query"
                    )
                    raise ValueError(msg)
                if isinstance(grade, bool) or not isinstance(grade, (int, np.integer)):
                    msg = (
                        f"relevance[{qid!r}][{doc_id!r}]{where} must be a positive integer "
                        f"grade, got {grade!r:.60}"
                    )
                    raise TypeError(msg)
                if grade < 1:
                    msg = (
                        f"relevance[{qid!r}][{doc_id!r}]{where} must be a positive integer "
                        f"grade, got {grade}; leave non-relevant documents out"
                    )
                    raise ValueError(msg)
            out[qid] = {d: int(g) for d, g in graded.items()}
        return out

    # ------------------------------------------------------------------ accessors
    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return len(self.queries)

    @property
    def n_docs(self) -> int:
        """Number of documents."""
        return len(self.corpus)

    @property
    def query_ids(self) -> list[Hashable]:
        """The query ids, in order."""
        return list(self.queries)

    @property
    def doc_ids(self) -> list[Hashable]:
        """The document ids, in order (this is the row order of :meth:`to_relevance`)."""
        return list(self.corpus)

    def grades(self) -> dict[Hashable, dict[Hashable, int]]:
        """``{query_id: {doc_id: grade}}`` for every relevant pair (grade 1 when not given)."""
        given = self.relevance or {}
        return {
            qid: {d: given.get(qid, {}).get(d, 1) for d in docs}
            for qid, docs in self.relevant_docs.items()
        }

    def to_relevance(
        self,
        doc_ids: Sequence[Hashable] | Mapping[Hashable, int] | None = None,
        query_ids: Sequence[Hashable] | None = None,
    ) -> Relevance:
        """The graded judgements as CSR arrays of document rows.

        Args:
            doc_ids: the id of each document row (or a ``{doc_id: row}`` map); default the
                corpus order.
            query_ids: the query of each row; default the order of ``queries``.
        """
        return Relevance.from_dict(
            self.grades(),
            query_ids=self.query_ids if query_ids is None else query_ids,
            doc_ids=self.doc_ids if doc_ids is None else doc_ids,
        )

    def subset(self, query_ids: Sequence[Hashable]) -> RetrievalDataset:
        """The given queries with their judgements; the corpus is shared (not copied)."""
        missing = [q for q in query_ids if q not in self.queries]
        if missing:
            msg = f"query_ids names {len(missing)} unknown query id(s), e.g. {missing[:3]!r}"
            raise ValueError(msg)
        relevance = None
        if self.relevance is not None:
            relevance = {q: self.relevance[q] for q in query_ids if q in self.relevance}
        sub = RetrievalDataset.__new__(RetrievalDataset)
        sub.queries = {q: self.queries[q] for q in query_ids}
        sub.corpus = self.corpus
        sub.relevant_docs = {q: self.relevant_docs[q] for q in query_ids if q in self.relevant_docs}
        sub.relevance = relevance
        sub.mode = self.mode
        sub.source = self.source
        return sub

    # ------------------------------------------------------------------ conversion and I/O
    @classmethod
    def from_any(cls, obj: Any) -> RetrievalDataset:
        """Accept any object with ``.queries``, ``.corpus`` and ``.relevant_docs``.

        LlamaIndex's ``EmbeddingQAFinetuneDataset`` qualifies, and so does a mapping with
        those keys. A ``relevance`` attribute or key, if present, supplies grades.

        Raises:
            TypeError: ``obj`` has not the three members.
        """
        if isinstance(obj, RetrievalDataset):
            return obj
        if isinstance(obj, Mapping):
            get = obj.get
        else:

            def get(name: str, default: Any = None) -> Any:
                return getattr(obj, name, default)

        missing = [n for n in ("queries", "corpus", "relevant_docs") if get(n) is None]
        if missing:
            msg = (
                "expected a dataset with .queries, .corpus and .relevant_docs (e.g. "
                f"LlamaIndex's EmbeddingQAFinetuneDataset), got {type(obj).__name__} "
                f"without {', '.join(missing)}"
            )
            raise TypeError(msg)
        return cls(
            queries=get("queries"),
            corpus=get("corpus"),
            relevant_docs=get("relevant_docs"),
            relevance=get("relevance"),
            mode=get("mode", "text") or "text",
        )

    def save_json(self, path: str | PathLike[str]) -> None:
        """Write the dataset as LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON.

        The output has the keys ``queries``, ``corpus``, ``relevant_docs``, ``mode`` (in that
        order, ``indent=4``), plus ``relevance`` when grades are present.

        Args:
            path: the file to write.
        """
        data: dict[str, Any] = {
            "queries": self.queries,
            "corpus": self.corpus,
            "relevant_docs": self.relevant_docs,
            "mode": self.mode,
        }
        if self.relevance is not None:
            data["relevance"] = self.relevance
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4)

    @classmethod
    def from_json(cls, path: str | PathLike[str]) -> RetrievalDataset:
        """Read a file written by :meth:`save_json` or by LlamaIndex's ``save_json``.

        Args:
            path: the JSON file.

        Raises:
            FileNotFoundError: no such file.
            DataFileError: (a ``ValueError``) a folder, bytes that are not UTF-8, malformed or
                too deeply nested JSON (file, line and column named), missing keys, values
                of the wrong kind, or ids in ``relevant_docs`` that are not in ``queries`` /
                ``corpus`` (the message names the file, the key and what came).
        """
        path = Path(path)
        expected = "a JSON object with keys queries, corpus, relevant_docs (save_json)"
        require_file(path, f"expected {expected}")
        data = read_json(path, expected)
        if not isinstance(data, dict):
            msg = (
                f"{path}: expected a JSON object with keys queries, corpus, relevant_docs, "
                f"got {type(data).__name__}"
            )
            raise DataFileError(msg, path)
        missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in data]
        if missing:
            msg = (
                f"{path}: missing key(s) {missing}; expected an EmbeddingQAFinetuneDataset "
                f"JSON with queries, corpus, relevant_docs (found {sorted(data)})"
            )
            raise DataFileError(msg, path)
        try:
            dataset = cls(
                queries=data["queries"],
                corpus=data["corpus"],
                relevant_docs=data["relevant_docs"],
                relevance=data.get("relevance"),
                mode=data.get("mode", "text"),
            )
        except (TypeError, ValueError) as err:
            raise DataFileError(f"{path}: {err}", path) from err
        dataset.source = str(path)
        return dataset


def split_dataset(
    dataset: RetrievalDataset,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    random_state: int | None = 0,
) -> tuple[RetrievalDataset, RetrievalDataset, RetrievalDataset]:
    """Split the queries into seeded random train / dev / test parts; the corpus is shared.

    The default ``(0.7, 0.1, 0.2)`` is the NUDGE reference's split (10 % dev, 20 % test).
    Part sizes are ``fractions * n_queries`` rounded so that they add up to ``n_queries``
    (largest remainders first); within each part queries keep their original order.

    Args:
        dataset: the dataset to split.
        fractions: ``(train, dev, test)`` shares, each ``>= 0``, summing to 1.
        random_state: seed for ``np.random.default_rng``.

    Returns:
        ``(train, dev, test)`` datasets.

    Raises:
        ValueError: ``fractions`` not three non-negative numbers summing to 1.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        msg = (
            "fractions must be three non-negative numbers (train, dev, test) summing to 1, "
            f"got {tuple(fractions)}"
        )
        raise ValueError(msg)
    n = dataset.n_queries
    exact = fr * n
    sizes = np.floor(exact).astype(np.int64)
    remainder = n - int(sizes.sum())
    sizes[np.argsort(-(exact - sizes), kind="stable")[:remainder]] += 1
    order = np.random.default_rng(random_state).permutation(n)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    ids = dataset.query_ids
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = np.sort(order[lo:hi])
        parts.append(dataset.subset([ids[i] for i in rows]))
    logger.info("split %d queries into train/dev/test = %s", n, sizes.tolist())
    return parts[0], parts[1], parts[2]


def _checked_texts(
    texts: Mapping[Hashable, Any], name: str, where: str, *, blank_ok: bool
) -> dict[Hashable, str]:
    """``texts`` as a dict after checking each value is a string (non-blank unless allowed)."""
    texts = dict(texts)
    values = texts.values()
    if set(map(type, values)) <= {str} and (blank_ok or all(map(str.strip, values))):
        return texts
    for key, text in texts.items():
        if not isinstance(text, str) or not (blank_ok or text.strip()):
            kind = "a string" if blank_ok else "a non-empty string"
            msg = f"{name}[{key!r}]{where} must be {kind}, got {text!r:.80}"
            raise ValueError(msg)
    return texts  # pragma: no cover - str subclasses only
