"""Retrieval datasets: the id-keyed text triple, BEIR folders and precomputed embeddings.

Two kinds of data live here:

* :class:`RetrievalDataset` — the ecosystem's id-keyed triple (``queries``, ``corpus``,
  ``relevant_docs``, as in LlamaIndex's ``EmbeddingQAFinetuneDataset``, sentence-transformers
  and BEIR) with optional graded relevance. Reads and writes LlamaIndex's JSON, loads BEIR
  folders (:func:`load_beir`) and splits queries into train/dev/test (:func:`split_dataset`).
* :class:`EmbeddedDataset` — document and query embeddings already computed, aligned to ids,
  with relevance as CSR arrays (:class:`~nudge_rag._metrics.Relevance`) per split
  (:func:`load_embedded`). This is what the solver, search and metrics consume.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._metrics import Relevance
from nudge_rag._queryset import QuerySet, row_index

logger = logging.getLogger(__name__)

__all__ = [
    "RetrievalDataset",
    "split_dataset",
    "load_beir",
    "EmbeddedSplit",
    "EmbeddedDataset",
    "load_embedded",
]

SPLIT_NAMES = ("train", "dev", "test")
_DOC_ID_KEYS = ("_id", "record_id", "id", "doc_id")
_QUERY_ID_KEYS = ("_id", "q_index", "id", "query_id")
_N_SHOWN = 5  # ids named in an error message


# ====================================================================== RetrievalDataset
@dataclass(eq=False)
class RetrievalDataset:
    """Queries, documents and which documents answer which query, all keyed by id.

    The JSON form is exactly LlamaIndex's ``EmbeddingQAFinetuneDataset.save_json`` output
    (keys ``queries``, ``corpus``, ``relevant_docs``, ``mode``), plus a ``relevance`` key when
    grades are present; files written by LlamaIndex load as they are, and files written here
    load in LlamaIndex (it ignores the extra key).

    Args:
        queries: ``{query_id: text}``.
        corpus: ``{doc_id: text}``.
        relevant_docs: ``{query_id: [doc_id, ...]}``; queries may be missing (no answers).
        relevance: optional grades ``{query_id: {doc_id: grade}}`` (positive ints) for pairs in
            ``relevant_docs``; a pair without a grade has grade 1.
        mode: LlamaIndex's dataset mode (``"text"``).
        source: where the data came from (a file name), used in error messages.

    Raises:
        ValueError: ``relevant_docs`` or ``relevance`` naming an unknown query or document id
            (the message names the ids and ``source``), or a non-positive grade.

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
        self.queries = dict(self.queries)
        self.corpus = dict(self.corpus)
        relevant: dict[Hashable, list[Hashable]] = {}
        for qid, docs in self.relevant_docs.items():
            if isinstance(docs, (str, bytes)) or not isinstance(docs, (Sequence, set)):
                msg = (
                    f"relevant_docs[{qid!r}]{where} must be a list of document ids, "
                    f"got {type(docs).__name__}"
                )
                raise TypeError(msg)
            relevant[qid] = list(docs)
        self.relevant_docs = relevant
        _check_known(relevant.keys(), self.queries, f"relevant_docs{where}", "query", "queries")
        _check_known(
            (d for docs in relevant.values() for d in docs),
            self.corpus,
            f"relevant_docs{where}",
            "document",
            "corpus",
        )
        if self.relevance is not None:
            self.relevance = self._checked_relevance(self.relevance, where)

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
                        f"grade, got {grade!r}"
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
            ValueError: malformed JSON (the message gives file, line and column), missing
                keys, or ids in ``relevant_docs`` that are not in ``queries`` / ``corpus``.
        """
        path = Path(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                msg = f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
                raise ValueError(msg) from err
        if not isinstance(data, dict):
            msg = (
                f"{path}: expected a JSON object with keys queries, corpus, relevant_docs, "
                f"got {type(data).__name__}"
            )
            raise ValueError(msg)
        missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in data]
        if missing:
            msg = (
                f"{path}: missing key(s) {missing}; expected an EmbeddingQAFinetuneDataset "
                f"JSON with queries, corpus, relevant_docs (found {sorted(data)})"
            )
            raise ValueError(msg)
        return cls(
            queries=data["queries"],
            corpus=data["corpus"],
            relevant_docs=data["relevant_docs"],
            relevance=data.get("relevance"),
            mode=data.get("mode", "text"),
            source=str(path),
        )


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


# ====================================================================== BEIR
def load_beir(folder: str | PathLike[str], split: str = "test") -> RetrievalDataset:
    """Load a BEIR dataset folder as a :class:`RetrievalDataset` with graded relevance.

    Expected layout (as BEIR's ``GenericDataLoader``)::

        folder/corpus.jsonl        {"_id": ..., "title": ..., "text": ...} per line
        folder/queries.jsonl       {"_id": ..., "text": ...} per line
        folder/qrels/{split}.tsv   header "query-id corpus-id score", tab-separated

    Document text is ``title + " " + text`` (just ``text`` when the title is empty). Qrels
    rows with score 0 are dropped and the remaining scores kept as grades; only queries with
    at least one relevant document in ``split`` are kept.

    Args:
        folder: the dataset folder.
        split: the qrels file to use (``"train"``, ``"dev"``, ``"test"``).

    Raises:
        FileNotFoundError: a missing file (named, with the layout above).
        ValueError: a malformed line (file and line number given), duplicate ids, or qrels
            naming unknown query or document ids (the first few named, with the file).
    """
    folder = Path(folder)
    layout = f"expected a BEIR folder with corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
    corpus_path = _require(folder / "corpus.jsonl", layout)
    queries_path = _require(folder / "queries.jsonl", layout)
    qrels_path = _require(folder / "qrels" / f"{split}.tsv", layout)
    corpus = _read_texts(corpus_path, ("_id",))
    queries = _read_texts(queries_path, ("_id",))
    qids, dids, grades = _read_qrels(qrels_path)
    _check_known(qids, queries, str(qrels_path), "query", queries_path.name)
    _check_known(dids, corpus, str(qrels_path), "document", corpus_path.name)
    relevant: dict[Hashable, list[Hashable]] = {}
    graded: dict[Hashable, dict[Hashable, int]] = {}
    n_zero = 0
    for qid, did, grade in zip(qids, dids, grades.tolist(), strict=True):
        if grade <= 0:
            n_zero += 1
            continue
        per_query = graded.setdefault(qid, {})
        if did in per_query:
            msg = f"{qrels_path}: query {qid!r} judges document {did!r} more than once"
            raise ValueError(msg)
        per_query[did] = grade
        relevant.setdefault(qid, []).append(did)
    if n_zero:
        logger.info("%s: dropped %d qrels rows with score <= 0", qrels_path, n_zero)
    kept = {q: text for q, (text, _) in queries.items() if q in relevant}
    logger.info(
        "loaded BEIR %s/%s: %d documents, %d queries, %d judgements",
        folder.name,
        split,
        len(corpus),
        len(kept),
        sum(len(v) for v in relevant.values()),
    )
    any_graded = any(g != 1 for per in graded.values() for g in per.values())
    return RetrievalDataset(
        queries=kept,
        corpus=_texts_only(corpus),
        relevant_docs=relevant,
        relevance=graded if any_graded else None,
        source=str(qrels_path),
    )


# ====================================================================== embedded data
@dataclass(frozen=True, eq=False)
class EmbeddedSplit:
    """One query split with precomputed embeddings and graded relevance.

    Attributes:
        name: ``"train"``, ``"dev"`` or ``"test"``.
        query_ids: ``n_queries`` query ids (str), aligned with the embedding rows.
        query_embeddings: ``(n_queries, dim)`` float32 array.
        relevance: CSR judgements; row ``i`` belongs to ``query_ids[i]``, indices are
            document rows of the owning :class:`EmbeddedDataset`, ``grades`` are ints > 0.
        query_texts: ``n_queries`` texts, or ``None`` when unavailable (synthetic data).
        source_query_ids: the original query ids when the files carry them (``orig_q_id``
            in the nfcorpus layout; not unique there), else ``None``.
    """

    name: str
    query_ids: Sequence[str]
    query_embeddings: np.ndarray
    relevance: Relevance
    query_texts: Sequence[str] | None = None
    source_query_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if self.query_embeddings.shape[0] != n or self.relevance.n_queries != n:
            msg = (
                f"split {self.name!r}: {n} query ids, but {self.query_embeddings.shape[0]} "
                f"embedding rows and {self.relevance.n_queries} relevance rows"
            )
            raise ValueError(msg)
        if self.query_texts is not None and len(self.query_texts) != n:
            msg = f"split {self.name!r}: {n} query ids, but {len(self.query_texts)} texts"
            raise ValueError(msg)

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return len(self.query_ids)

    def queryset(self) -> QuerySet:
        """The split as a :class:`QuerySet` (answers = documents with grade > 0)."""
        return QuerySet(self.query_embeddings, (self.relevance.indptr, self.relevance.indices))


@dataclass(frozen=True, eq=False)
class EmbeddedDataset:
    """Document embeddings with ids, plus query splits, all aligned row by row.

    Attributes:
        doc_ids: ``n_docs`` document ids (str); ``doc_ids[i]`` is row ``i`` of
            ``doc_embeddings`` and the row number used in every split's ``relevance``.
        doc_embeddings: ``(n_docs, dim)`` float32 array, or a read-only ``np.memmap``.
        splits: ``{"train": EmbeddedSplit, "dev": ..., "test": ...}`` (those available).
        name: a label (the folder and model for loaded data).
        doc_texts: the document texts in row order, or ``None`` when unavailable; loaded
            from the corpus file on first access.
        source_doc_ids: the original document ids when the corpus carries them (``doc_id``
            in the nfcorpus layout, e.g. ``MED-10``), else ``None``; loaded with the texts.
        text_loader: a callable returning ``(doc_texts, source_doc_ids or None)`` in row
            order, called once on first access; ``None`` when there are no texts.
    """

    doc_ids: Sequence[str]
    doc_embeddings: np.ndarray
    splits: dict[str, EmbeddedSplit]
    name: str = ""
    text_loader: Callable[[], tuple[list[str], list[str] | None]] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        if self.doc_embeddings.ndim != 2 or self.doc_embeddings.shape[0] != len(self.doc_ids):
            msg = (
                f"doc_embeddings must have shape (n_docs, dim) = ({len(self.doc_ids)}, dim), "
                f"got {self.doc_embeddings.shape}"
            )
            raise ValueError(msg)
        dim = self.doc_embeddings.shape[1]
        for split in self.splits.values():
            if split.query_embeddings.shape[1] != dim:
                msg = (
                    f"split {split.name!r} query embeddings have "
                    f"{split.query_embeddings.shape[1]} dimensions, but the documents have {dim}"
                )
                raise ValueError(msg)

    @property
    def n_docs(self) -> int:
        """Number of documents."""
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.doc_embeddings.shape[1])

    @property
    def doc_texts(self) -> list[str] | None:
        """Document texts in row order (read on first access), or ``None``."""
        return self._corpus_info()[0]

    @property
    def source_doc_ids(self) -> list[str] | None:
        """Original document ids in row order (read on first access), or ``None``."""
        return self._corpus_info()[1]

    def _corpus_info(self) -> tuple[list[str] | None, list[str] | None]:
        cached = self.__dict__.get("_corpus_cache")
        if cached is None:
            cached = (None, None) if self.text_loader is None else self.text_loader()
            object.__setattr__(self, "_corpus_cache", cached)
        return cached

    def split(self, name: str) -> EmbeddedSplit:
        """The split called ``name``.

        Raises:
            KeyError: no such split (the message lists those available).
        """
        try:
            return self.splits[name]
        except KeyError:
            msg = f"no split {name!r} in {self.name or 'this dataset'}; have {list(self.splits)}"
            raise KeyError(msg) from None

    @property
    def train(self) -> EmbeddedSplit:
        """The ``"train"`` split."""
        return self.split("train")

    @property
    def dev(self) -> EmbeddedSplit:
        """The ``"dev"`` split."""
        return self.split("dev")

    @property
    def test(self) -> EmbeddedSplit:
        """The ``"test"`` split."""
        return self.split("test")


def load_embedded(
    data_dir: str | PathLike[str],
    split_name: str = "nudge_split",
    model: str = "all-MiniLM-L6-v2",
    *,
    mmap: bool = True,
    splits: Sequence[str] | None = None,
    corpus_dir: str | PathLike[str] | None = None,
) -> EmbeddedDataset:
    """Load precomputed document and query embeddings with their ids and graded qrels.

    ``data_dir`` is either a folder holding ``split_name/`` (e.g. the ``nfcorpus`` folder) or
    the split folder itself (any folder with an ``emb/`` subfolder). Layout of a split folder
    (each item: the first name found is used)::

        corpus.jsonl                  one document per line: id in "_id" or "record_id",
                                      text in "text" (+ "title" if present: title + " " + text)
        queries_{split}.jsonl | queries.jsonl
                                      id in "_id" or "q_index", text in "text"
        qrels_{split}.tsv | qrels/{split}.tsv
                                      header then "query-id  doc-id  grade" (tab-separated);
                                      grade <= 0 rows are dropped
        emb/<model>/corpus.npy        (n_docs, dim) float32
        emb/<model>/corpus.ids.json   JSON list: the document id of each row
        emb/<model>/queries_{split}.npy + queries_{split}.ids.json
                                      the split's queries (these ids define the split), or
        emb/<model>/queries.npy + queries.ids.json
                                      all queries; a split is the queries in its qrels

    So a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``) plus an
    ``emb/<model>/`` folder with ``corpus.npy``, ``queries.npy`` and the two ``*.ids.json``
    files loads directly. If the split folder has no ``emb/<model>/corpus.npy``, the corpus
    is taken from ``corpus_dir``, by default the sibling ``nudge_split/`` folder (in the
    nfcorpus data ``beir_split/`` reuses that corpus).

    Embedding rows are mapped to ids through the ``*.ids.json`` files (no order is assumed);
    ``doc_ids`` follow the rows of ``corpus.npy``, so the matrix is used as stored.

    Args:
        data_dir: the dataset folder or the split folder.
        split_name: the split folder inside ``data_dir`` (``"nudge_split"``, ``"beir_split"``).
        model: the embedding model subfolder of ``emb/``.
        mmap: open ``corpus.npy`` with ``mmap_mode="r"`` instead of reading it.
        splits: the query splits to load; default all of ``train``, ``dev``, ``test`` that
            have a qrels file.
        corpus_dir: the folder holding ``corpus.jsonl`` and ``emb/<model>/corpus.npy`` when
            it is not the split folder.

    Returns:
        The dataset; its document texts are read from ``corpus.jsonl`` on first access.

    Raises:
        FileNotFoundError: a missing folder or file (named, with the layout expected).
        ValueError: ids that do not match between files, row counts that differ from the
            ids files, a malformed line (file and line named), or unknown ids in qrels.
    """
    root = Path(data_dir)
    if not root.is_dir():
        msg = f"data_dir {root} is not a folder; expected a dataset folder holding {split_name}/"
        raise FileNotFoundError(msg)
    split_dir = root if (root / "emb").is_dir() else root / split_name
    if not (split_dir / "emb").is_dir():
        msg = (
            f"{split_dir / 'emb'} not found: expected data_dir to be a split folder with "
            f"emb/<model>/ or a folder holding {split_name}/emb/<model>/"
        )
        raise FileNotFoundError(msg)
    emb_dir = split_dir / "emb" / model
    if not emb_dir.is_dir():
        have = sorted(p.name for p in (split_dir / "emb").iterdir() if p.is_dir())
        msg = f"{emb_dir} not found: no embeddings for model {model!r}; available: {have}"
        raise FileNotFoundError(msg)
    corpus_base = _corpus_base(split_dir, model, corpus_dir)
    corpus_npy = _require(
        corpus_base / "emb" / model / "corpus.npy",
        f"expected the document embeddings at emb/{model}/corpus.npy",
    )
    doc_ids = _read_ids(corpus_npy.with_name("corpus.ids.json"))
    doc_embeddings = _load_npy(corpus_npy, mmap=mmap)
    _check_rows(doc_embeddings, doc_ids, corpus_npy)
    doc_index = row_index(doc_ids)

    if splits is None:
        splits = [s for s in SPLIT_NAMES if _first_existing(_qrels_candidates(split_dir, s))]
        if not splits:
            msg = (
                f"no qrels found in {split_dir}: expected qrels_{{split}}.tsv or "
                "qrels/{split}.tsv for split in train, dev, test"
            )
            raise FileNotFoundError(msg)
    loaded = {
        s: _load_split(split_dir, emb_dir, s, doc_index, doc_embeddings.shape[1]) for s in splits
    }
    corpus_jsonl = corpus_base / "corpus.jsonl"
    name = f"{split_dir.name}/{model}"
    logger.info(
        "loaded %s: %d documents x %d dims, queries %s",
        name,
        len(doc_ids),
        doc_embeddings.shape[1],
        {s: sp.n_queries for s, sp in loaded.items()},
    )
    return EmbeddedDataset(
        doc_ids=doc_ids,
        doc_embeddings=doc_embeddings,
        splits=loaded,
        name=name,
        text_loader=lambda: _load_corpus_texts(corpus_jsonl, doc_ids),
    )


# ---------------------------------------------------------------------- embedded helpers
def _corpus_base(split_dir: Path, model: str, corpus_dir: Any) -> Path:
    if corpus_dir is not None:
        return Path(corpus_dir)
    if (split_dir / "emb" / model / "corpus.npy").exists():
        return split_dir
    sibling = split_dir.parent / "nudge_split"
    if (sibling / "emb" / model / "corpus.npy").exists():
        logger.debug("%s has no corpus embeddings; using %s", split_dir, sibling)
        return sibling
    msg = (
        f"{split_dir / 'emb' / model / 'corpus.npy'} not found (nor in a sibling nudge_split/); "
        "expected the document embeddings at emb/<model>/corpus.npy with corpus.ids.json, or "
        "pass corpus_dir="
    )
    raise FileNotFoundError(msg)


def _qrels_candidates(split_dir: Path, split: str) -> list[Path]:
    return [split_dir / f"qrels_{split}.tsv", split_dir / "qrels" / f"{split}.tsv"]


def _load_split(
    split_dir: Path, emb_dir: Path, split: str, doc_index: Mapping[str, int], dim: int
) -> EmbeddedSplit:
    qrels_path = _first_existing(_qrels_candidates(split_dir, split))
    if qrels_path is None:
        msg = (
            f"no qrels for split {split!r} in {split_dir}: expected qrels_{split}.tsv or "
            f"qrels/{split}.tsv"
        )
        raise FileNotFoundError(msg)
    texts_path = _first_existing(
        [split_dir / f"queries_{split}.jsonl", split_dir / "queries.jsonl"]
    )
    if texts_path is None:
        msg = (
            f"no query texts for split {split!r} in {split_dir}: expected "
            f"queries_{split}.jsonl or queries.jsonl"
        )
        raise FileNotFoundError(msg)
    npy_path = _first_existing([emb_dir / f"queries_{split}.npy", emb_dir / "queries.npy"])
    if npy_path is None:
        msg = (
            f"no query embeddings for split {split!r} in {emb_dir}: expected "
            f"queries_{split}.npy or queries.npy with a matching .ids.json"
        )
        raise FileNotFoundError(msg)
    emb_ids = _read_ids(npy_path.with_name(npy_path.stem + ".ids.json"))
    emb = _load_npy(npy_path, mmap=False)
    _check_rows(emb, emb_ids, npy_path)
    if emb.shape[1] != dim:
        msg = f"{npy_path} has {emb.shape[1]} dimensions, but the document embeddings have {dim}"
        raise ValueError(msg)
    emb_index = row_index(emb_ids)
    qids, dids, grades = _read_qrels(qrels_path)

    if npy_path.name == "queries.npy":  # shared matrix: the split is the queries in its qrels
        query_ids = list(dict.fromkeys(qids))
        _check_known(query_ids, emb_index, str(qrels_path), "query", npy_path.stem + ".ids.json")
        emb = emb[np.fromiter((emb_index[q] for q in query_ids), np.int64, len(query_ids))]
    else:
        query_ids = emb_ids
    records = _read_texts(texts_path, _QUERY_ID_KEYS, source_key="orig_q_id")
    _check_known(query_ids, records, f"{npy_path.stem}.ids.json", "query", str(texts_path))
    if texts_path.name != "queries.jsonl" and len(records) != len(query_ids):
        extra = [q for q in records if q not in emb_index]
        msg = (
            f"{texts_path} has {len(records)} queries, but {npy_path.with_suffix('')}.ids.json "
            f"has {len(query_ids)}; without embeddings: {extra[:_N_SHOWN]!r}"
        )
        raise ValueError(msg)
    query_texts = [records[q][0] for q in query_ids]
    source_ids = [records[q][1] for q in query_ids]
    source_query_ids = None if all(s is None for s in source_ids) else source_ids

    relevance = _relevance_rows(qids, dids, grades, query_ids, doc_index, qrels_path)
    return EmbeddedSplit(
        name=split,
        query_ids=query_ids,
        query_embeddings=emb,
        relevance=relevance,
        query_texts=query_texts,
        source_query_ids=source_query_ids,
    )


def _relevance_rows(
    qids: list[str],
    dids: list[str],
    grades: np.ndarray,
    query_ids: Sequence[str],
    doc_index: Mapping[str, int],
    path: Path,
) -> Relevance:
    """Map qrels ids to rows and build the CSR judgements (grade <= 0 rows dropped)."""
    query_index = {q: i for i, q in enumerate(query_ids)}
    _check_known(qids, query_index, str(path), "query", "the split's queries")
    _check_known(dids, doc_index, str(path), "document", "corpus.ids.json")
    q_rows = np.fromiter((query_index[q] for q in qids), np.int64, len(qids))
    d_rows = np.fromiter((doc_index[d] for d in dids), np.int64, len(dids))
    keep = grades > 0
    if not keep.all():
        logger.info("%s: dropped %d rows with grade <= 0", path, int((~keep).sum()))
    q_rows, d_rows, kept_grades = q_rows[keep], d_rows[keep], grades[keep]
    order = np.lexsort((d_rows, q_rows))
    q_rows, d_rows, kept_grades = q_rows[order], d_rows[order], kept_grades[order]
    dup = (q_rows[1:] == q_rows[:-1]) & (d_rows[1:] == d_rows[:-1])
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        msg = (
            f"{path}: query {query_ids[q_rows[pos]]!r} judges document "
            f"{_id_of_row(doc_index, int(d_rows[pos]))!r} more than once"
        )
        raise ValueError(msg)
    n_queries = len(query_ids)
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(q_rows, minlength=n_queries), out=indptr[1:])
    empty = int((np.diff(indptr) == 0).sum())
    if empty:
        logger.warning("%s: %d of %d queries have no relevant document", path, empty, n_queries)
    return Relevance(indptr, d_rows, kept_grades)


def _id_of_row(index: Mapping[str, int], row: int) -> str:
    return next(k for k, v in index.items() if v == row)


def _load_corpus_texts(path: Path, doc_ids: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Texts (and original ids, if any) of ``doc_ids`` from ``corpus.jsonl``."""
    _require(path, "expected the document texts in corpus.jsonl")
    records = _read_texts(path, _DOC_ID_KEYS, source_key="doc_id")
    _check_known(doc_ids, records, "corpus.ids.json", "document", str(path))
    texts = [records[d][0] for d in doc_ids]
    sources = [records[d][1] for d in doc_ids]
    return texts, (None if all(s is None for s in sources) else sources)


def _read_ids(path: Path) -> list[str]:
    """A JSON list of ids (ints or strings), as strings."""
    _require(path, "expected a JSON list with the id of each embedding row next to the .npy")
    try:
        with open(path, encoding="utf-8") as f:
            ids = json.load(f)
    except json.JSONDecodeError as err:
        msg = f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        raise ValueError(msg) from err
    if not isinstance(ids, list):
        kind = type(ids).__name__
        msg = f"{path}: expected a JSON list of ids (one per embedding row), got {kind}"
        raise ValueError(msg)
    return [str(i) for i in ids]


def _load_npy(path: Path, *, mmap: bool) -> np.ndarray:
    arr = np.load(path, mmap_mode="r" if mmap else None)
    if arr.ndim != 2:
        msg = f"{path}: expected a 2-D (n_rows, dim) array, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.dtype != np.float32:
        if not np.issubdtype(arr.dtype, np.floating):
            msg = f"{path}: expected float32 embeddings, got dtype {arr.dtype}"
            raise ValueError(msg)
        logger.warning("%s holds %s; converting to float32 in memory", path, arr.dtype)
        arr = np.asarray(arr, dtype=np.float32)
    return arr


def _check_rows(arr: np.ndarray, ids: Sequence[str], path: Path) -> None:
    if arr.shape[0] != len(ids):
        msg = (
            f"{path} has {arr.shape[0]} rows, but {path.stem}.ids.json lists {len(ids)} ids; "
            "each row needs exactly one id"
        )
        raise ValueError(msg)


# ====================================================================== file readers
def _require(path: Path, layout: str) -> Path:
    if not path.is_file():
        msg = f"{path} not found; {layout}"
        raise FileNotFoundError(msg)
    return path


def _first_existing(paths: Sequence[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each non-blank line; malformed lines raise ``ValueError``."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                msg = f"{path}:{lineno}: malformed JSON line (column {err.colno}: {err.msg})"
                raise ValueError(msg) from err
            if not isinstance(record, dict):
                msg = f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
                raise ValueError(msg)
            yield lineno, record


def _read_texts(
    path: Path, id_keys: Sequence[str], source_key: str | None = None
) -> dict[str, tuple[str, str | None]]:
    """``{id: (text, source id)}`` from a jsonl file; text is ``title + " " + text``."""
    out: dict[str, tuple[str, str | None]] = {}
    id_key: str | None = None
    for lineno, record in _iter_jsonl(path):
        if id_key is None:
            id_key = next((key for key in id_keys if key in record), None)
            if id_key is None:
                msg = f"{path}:{lineno}: no id field; expected one of {list(id_keys)}"
                raise ValueError(msg)
        if id_key not in record:
            msg = f"{path}:{lineno}: missing id field {id_key!r}"
            raise ValueError(msg)
        if "text" not in record:
            msg = f"{path}:{lineno}: missing field 'text'"
            raise ValueError(msg)
        key = str(record[id_key])
        if key in out:
            msg = f"{path}:{lineno}: duplicate id {key!r}"
            raise ValueError(msg)
        title = record.get("title") or ""
        text = str(record["text"])
        source = record.get(source_key) if source_key and source_key != id_key else None
        out[key] = (f"{title} {text}" if title else text, None if source is None else str(source))
    return out


def _texts_only(records: Mapping[str, tuple[str, str | None]]) -> dict[str, str]:
    return {key: text for key, (text, _) in records.items()}


def _read_qrels(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Query ids, document ids and int64 grades of a tab-separated qrels file.

    The first line is skipped when its third field is not an integer (a header).
    """
    qids: list[str] = []
    dids: list[str] = []
    grades: list[int] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n\r").split("\t")
            if len(fields) != 3:
                fields = line.split()
            if len(fields) != 3:
                msg = (
                    f"{path}:{lineno}: expected 3 tab-separated fields "
                    f"(query-id, corpus-id, score), got {len(fields)}"
                )
                raise ValueError(msg)
            try:
                grade = int(fields[2])
            except ValueError:
                if lineno == 1:
                    continue  # header
                msg = f"{path}:{lineno}: score must be an integer, got {fields[2]!r}"
                raise ValueError(msg) from None
            qids.append(fields[0].strip())
            dids.append(fields[1].strip())
            grades.append(grade)
    return qids, dids, np.asarray(grades, dtype=np.int64)


def _check_known(ids: Any, known: Mapping[Any, Any], where: str, kind: str, known_as: str) -> None:
    """Raise ``ValueError`` naming the first few ``ids`` that are not keys of ``known``."""
    unknown = list(dict.fromkeys(i for i in ids if i not in known))
    if unknown:
        msg = (
            f"{where} names {len(unknown)} {kind} id(s) that are not in {known_as}, e.g. "
            f"{unknown[:_N_SHOWN]!r}"
        )
        raise ValueError(msg)
