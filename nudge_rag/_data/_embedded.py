"""Precomputed embeddings: :class:`EmbeddedDataset`, :class:`EmbeddedSplit`, :func:`load_embedded`.

Document and query embeddings already computed, aligned to ids, with graded relevance as a
:class:`~nudge_rag._queryset.Relevance` per split: what the solver, search and metrics consume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._data._readers import (
    DataFileError,
    check_known,
    first_existing,
    load_npy,
    qrels_line_numbers,
    read_ids,
    read_qrels,
    read_texts,
    require_file,
)
from nudge_rag._queryset import QuerySet, Relevance, row_index

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedDataset", "EmbeddedSplit", "load_embedded", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "dev", "test")
_DOC_ID_KEYS = ("_id", "record_id", "id", "doc_id")
_QUERY_ID_KEYS = ("_id", "q_index", "id", "query_id")
_N_SHOWN = 5  # ids named in an error message


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
        return QuerySet(self.query_embeddings, self.relevance)


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
    splits: str | Sequence[str] | None = None,
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
                                      optional header, then "query-id  doc-id  grade"
                                      (tab-separated, integer grades); grade <= 0 rows are
                                      dropped
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
        splits: the query split(s) to load (``"test"`` or ``["train", "dev"]``); each must
            have its files. Default: those of ``train``, ``dev``, ``test`` that have a qrels
            file.
        corpus_dir: the folder holding ``corpus.jsonl`` and ``emb/<model>/corpus.npy`` when
            it is not the split folder.

    Returns:
        The dataset; its document texts are read from ``corpus.jsonl`` on first access.

    Raises:
        FileNotFoundError: a missing folder or file (named, with the layout expected).
        DataFileError: (a ``ValueError``) a file whose content is wrong, named with the line
            or byte offset where it applies: an empty, truncated or non-float ``.npy``, bytes
            that are not UTF-8, a malformed line, an id that is ``null``, a float or blank,
            ids that do not match between files, row counts that differ from the ids files,
            or unknown ids in qrels.
        ValueError: a bad ``splits`` argument.
    """
    splits = _check_splits(splits)
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
    corpus_npy = require_file(
        corpus_base / "emb" / model / "corpus.npy",
        f"expected the document embeddings at emb/{model}/corpus.npy",
    )
    doc_ids = read_ids(corpus_npy.with_name("corpus.ids.json"))
    doc_embeddings = load_npy(corpus_npy, mmap=mmap, what="document embeddings")
    _check_one_id_per_row(doc_embeddings, doc_ids, corpus_npy)
    doc_index = row_index(doc_ids)

    if splits is None:
        splits = [s for s in SPLIT_NAMES if first_existing(_qrels_candidates(split_dir, s))]
        if not splits:
            msg = (
                f"no qrels found in {split_dir}: expected qrels_{{split}}.tsv or "
                "qrels/{split}.tsv for split in train, dev, test"
            )
            raise FileNotFoundError(msg)
        if len(splits) < len(SPLIT_NAMES):
            logger.info("%s: qrels found for %s only", split_dir, splits)
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
    qrels_path = first_existing(_qrels_candidates(split_dir, split))
    if qrels_path is None:
        msg = (
            f"no qrels for split {split!r} in {split_dir}: expected qrels_{split}.tsv or "
            f"qrels/{split}.tsv"
        )
        raise FileNotFoundError(msg)
    texts_path = first_existing([split_dir / f"queries_{split}.jsonl", split_dir / "queries.jsonl"])
    if texts_path is None:
        msg = (
            f"no query texts for split {split!r} in {split_dir}: expected "
            f"queries_{split}.jsonl or queries.jsonl"
        )
        raise FileNotFoundError(msg)
    npy_path = first_existing([emb_dir / f"queries_{split}.npy", emb_dir / "queries.npy"])
    if npy_path is None:
        msg = (
            f"no query embeddings for split {split!r} in {emb_dir}: expected "
            f"queries_{split}.npy or queries.npy with a matching .ids.json"
        )
        raise FileNotFoundError(msg)
    ids_path = npy_path.with_name(npy_path.stem + ".ids.json")
    emb_ids = read_ids(ids_path)
    emb = load_npy(npy_path, mmap=False, what="query embeddings")
    _check_one_id_per_row(emb, emb_ids, npy_path)
    if emb.shape[1] != dim:
        msg = f"{npy_path} has {emb.shape[1]} dimensions, but the document embeddings have {dim}"
        raise DataFileError(msg, npy_path)
    emb_index = row_index(emb_ids)
    qids, dids, grades = read_qrels(qrels_path)

    if npy_path.name == "queries.npy":  # shared matrix: the split is the queries in its qrels
        query_ids = list(dict.fromkeys(qids))
        check_known(query_ids, emb_index, str(qrels_path), "query", ids_path.name, path=qrels_path)
        emb = emb[np.fromiter((emb_index[q] for q in query_ids), np.int64, len(query_ids))]
    else:
        query_ids = emb_ids
    records = read_texts(texts_path, _QUERY_ID_KEYS, source_key="orig_q_id", kind="query")
    check_known(query_ids, records, str(ids_path), "query", str(texts_path), path=ids_path)
    if texts_path.name != "queries.jsonl" and len(records) != len(query_ids):
        extra = [q for q in records if q not in emb_index]
        msg = (
            f"{texts_path} has {len(records)} queries, but {ids_path} has {len(query_ids)}; "
            f"without embeddings: {extra[:_N_SHOWN]!r}"
        )
        raise DataFileError(msg, texts_path)
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
    check_known(qids, query_index, str(path), "query", "the split's queries", path=path)
    check_known(dids, doc_index, str(path), "document", "corpus.ids.json", path=path)
    q_rows = np.fromiter((query_index[q] for q in qids), np.int64, len(qids))
    d_rows = np.fromiter((doc_index[d] for d in dids), np.int64, len(dids))
    keep = grades > 0
    if not keep.all():
        logger.info("%s: dropped %d rows with grade <= 0", path, int((~keep).sum()))
    rows = np.flatnonzero(keep)  # the qrels row of each kept judgement
    q_rows, d_rows, kept_grades = q_rows[keep], d_rows[keep], grades[keep]
    order = np.lexsort((d_rows, q_rows))  # stable: a repeated pair keeps the file's order
    q_rows, d_rows, kept_grades = q_rows[order], d_rows[order], kept_grades[order]
    dup = (q_rows[1:] == q_rows[:-1]) & (d_rows[1:] == d_rows[:-1])
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        lines = qrels_line_numbers(path)[rows[order]]
        first, again = int(lines[pos]), int(lines[pos + 1])
        msg = (
            f"{path}:{again}: query {query_ids[q_rows[pos]]!r} judges document "
            f"{_id_of_row(doc_index, int(d_rows[pos]))!r} again (first on line {first}); give "
            "each (query, document) pair once"
        )
        raise DataFileError(msg, path, again)
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
    require_file(path, "expected the document texts in corpus.jsonl")
    records = read_texts(path, _DOC_ID_KEYS, source_key="doc_id")
    check_known(doc_ids, records, "corpus.ids.json", "document", str(path), path=path)
    texts = [records[d][0] for d in doc_ids]
    sources = [records[d][1] for d in doc_ids]
    return texts, (None if all(s is None for s in sources) else sources)


def _check_one_id_per_row(arr: np.ndarray, ids: Sequence[str], path: Path) -> None:
    """Raise unless the ``.npy`` at ``path`` has as many rows as its ``.ids.json`` has ids."""
    if arr.shape[0] != len(ids):
        msg = (
            f"{path} has {arr.shape[0]} rows, but {path.stem}.ids.json lists {len(ids)} ids; "
            "each row needs exactly one id"
        )
        raise DataFileError(msg, path)


def _check_splits(splits: Any) -> list[str] | None:
    """``splits`` as a list of unique names; one name (a string) is a list of one."""
    if splits is None:
        return None
    names = [splits] if isinstance(splits, str) else splits
    if not isinstance(names, (Sequence, set, frozenset)) or isinstance(names, bytes):
        msg = f"splits must be a split name or a list of them, got {type(splits).__name__}"
        raise TypeError(msg)
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad or not names:
        msg = (
            "splits must be a split name such as 'train' or a non-empty list of them, got "
            f"{splits!r:.80}"
        )
        raise ValueError(msg)
    return list(dict.fromkeys(names))
