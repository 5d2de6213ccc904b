"""BEIR dataset folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``)."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from os import PathLike
from pathlib import Path

from nudge_rag._data._readers import (
    DataFileError,
    check_known,
    qrels_line_numbers,
    read_qrels,
    read_texts,
    require_file,
)
from nudge_rag._data._retrieval import RetrievalDataset

logger = logging.getLogger(__name__)

__all__ = ["load_beir"]


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
        DataFileError: (a ``ValueError``) a malformed line (file and line number given),
            duplicate ids, a blank query, or qrels naming unknown query or document ids (the
            first few named, with the file).
    """
    if not isinstance(split, str):
        msg = f"split must be the name of a qrels file such as 'test', got {split!r}"
        raise TypeError(msg)
    folder = Path(folder)
    layout = f"expected a BEIR folder with corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
    corpus_path = require_file(folder / "corpus.jsonl", layout)
    queries_path = require_file(folder / "queries.jsonl", layout)
    qrels_path = require_file(folder / "qrels" / f"{split}.tsv", layout)
    corpus = read_texts(corpus_path, ("_id",))
    queries = read_texts(queries_path, ("_id",), kind="query")
    qids, dids, grades = read_qrels(qrels_path)
    check_known(qids, queries, str(qrels_path), "query", queries_path.name, path=qrels_path)
    check_known(dids, corpus, str(qrels_path), "document", corpus_path.name, path=qrels_path)
    relevant: dict[Hashable, list[Hashable]] = {}
    graded: dict[Hashable, dict[Hashable, int]] = {}
    n_zero = 0
    for row, (qid, did, grade) in enumerate(zip(qids, dids, grades.tolist(), strict=True)):
        if grade <= 0:
            n_zero += 1
            continue
        per_query = graded.setdefault(qid, {})
        if did in per_query:
            line = int(qrels_line_numbers(qrels_path)[row])
            msg = f"{qrels_path}:{line}: query {qid!r} judges document {did!r} more than once"
            raise DataFileError(msg, qrels_path, line)
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
        corpus={key: text for key, (text, _) in corpus.items()},
        relevant_docs=relevant,
        relevance=graded if any_graded else None,
        source=str(qrels_path),
    )
