"""Files of (question, document) pairs, as the command line reads them for ``--pairs``.

Four forms, told apart by what the path is:

* **JSON lines** (any other file): one object per line, ``{"question": "...", "doc_id": "..."}``
  (optionally ``"grade": 2``) or ``{"question": "...", "doc_ids": [...]}`` (optionally
  ``"grades": [...]``, one per id, or ``"doc_ids": {"id": grade}``);
* **CSV** (``.csv``): a header with ``question`` and ``doc_id`` columns (and optionally
  ``grade``), one pair per row;
* **LlamaIndex** ``EmbeddingQAFinetuneDataset`` **JSON** (``.json``): ``queries``, ``corpus``,
  ``relevant_docs`` (read with :meth:`nudge_rag.data.RetrievalDataset.from_json`; a ``relevance``
  key gives grades);
* **a BEIR folder** (a directory): ``queries.jsonl`` + ``qrels/<split>.tsv`` (also the
  ``queries_<split>.jsonl`` + ``qrels_<split>.tsv`` layout), graded by the qrels scores.

Every problem names the file and the line or row where it is, what was expected and what
came (:class:`~nudge_rag._data.DataFileError`, a ``ValueError``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nudge_rag._data import DataFileError, RetrievalDataset
from nudge_rag._data._readers import iter_jsonl, read_qrels, read_texts

__all__ = ["PairSet", "read_pair_file"]

_SHOWN = 80


@dataclass
class PairSet:
    """Unique questions with the documents that answer each, read from one file.

    Attributes:
        questions: the distinct questions, in first-seen order (stripped).
        answers: for each question, the ids of its answer documents (strings, unique).
        grades: for each question, the grade of each answer (positive ints, 1 when the file
            gives none).
        source: the file or folder they came from (for messages).
        graded: whether the file gave grades other than 1.
    """

    questions: list[str]
    answers: list[list[str]]
    grades: list[list[int]]
    source: str
    graded: bool = False

    @property
    def n_questions(self) -> int:
        """Number of distinct questions."""
        return len(self.questions)

    @property
    def n_pairs(self) -> int:
        """Number of distinct (question, document) pairs."""
        return sum(len(a) for a in self.answers)

    def pairs(self) -> list[tuple[str, str]]:
        """``[(question, doc_id), ...]``, the form :class:`nudge_rag.StoreTuner` takes."""
        return [(q, d) for q, ids in zip(self.questions, self.answers) for d in ids]

    def doc_ids(self) -> list[str]:
        """Every answer id once, first-seen order."""
        return list(dict.fromkeys(d for ids in self.answers for d in ids))


class _Builder:
    """Groups pairs by question; a repeated pair keeps its highest grade."""

    def __init__(self, source: str):
        self.source = source
        self.by_question: dict[str, dict[str, int]] = {}

    def add(self, question: str, doc_id: str, grade: int) -> None:
        docs = self.by_question.setdefault(question, {})
        docs[doc_id] = max(grade, docs.get(doc_id, 0))

    def build(self, what: str) -> PairSet:
        if not self.by_question:
            msg = f"{self.source}: no (question, doc_id) pairs found; expected {what}"
            raise DataFileError(msg, self.source)
        questions = list(self.by_question)
        answers = [list(self.by_question[q]) for q in questions]
        grades = [list(self.by_question[q].values()) for q in questions]
        graded = any(g != 1 for row in grades for g in row)
        return PairSet(questions, answers, grades, self.source, graded)


def read_pair_file(
    path: str | os.PathLike[str], *, split: str | None = None, name: str = "--pairs"
) -> PairSet:
    """Read (question, document) pairs from ``path`` in any of the module's four forms.

    Args:
        path: a JSON-lines, CSV or ``EmbeddingQAFinetuneDataset`` JSON file, or a BEIR folder.
        split: the qrels split of a BEIR folder (``"train"``, ``"dev"``, ``"test"``); ignored
            for files. ``None`` with a folder that has one qrels file uses it.
        name: the option the path came from, for messages.

    Returns:
        The :class:`PairSet`.

    Raises:
        FileNotFoundError: no such file or folder, or a BEIR folder without the split's files
            (the message lists the splits that exist).
        DataFileError: (a ``ValueError``) a bad line or row (file and line named), or no pairs.
    """
    path = Path(path)
    if path.is_dir():
        return _read_beir(path, split, name)
    if not path.exists():
        msg = f"{name} {path}: no such file or folder"
        raise FileNotFoundError(msg)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _read_dataset_json(path)
    return _read_jsonl(path)


# ---------------------------------------------------------------------- checks
def _show(value: Any) -> str:
    return f"{value!r:.{_SHOWN}}"


def _question(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        msg = f"{where}: 'question' must be a non-empty string, got {_show(value)}"
        raise DataFileError(msg)
    return value.strip()


def _doc_id(value: Any, where: str, field: str = "doc_id") -> str:
    ok = isinstance(value, str) and value.strip() != ""
    ok = ok or (isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        msg = f"{where}: {field!r} must be a non-empty string or an integer id, got {_show(value)}"
        raise DataFileError(msg)
    return str(value).strip()


def _grade(value: Any, where: str, field: str = "grade") -> int:
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{where}: {field!r} must be an integer >= 0, got {_show(value)}"
        raise DataFileError(msg)
    return value


def _located(err: DataFileError, path: Path, line: int) -> DataFileError:
    return DataFileError(str(err), path, line)


# ---------------------------------------------------------------------- JSON lines
_JSONL = (
    'one JSON object per line: {"question": ..., "doc_id": ...} or '
    '{"question": ..., "doc_ids": [...]}'
)


def _read_jsonl(path: Path) -> PairSet:
    out = _Builder(str(path))
    for line, record in iter_jsonl(path):
        where = f"{path}:{line}"
        try:
            for doc_id, grade in _record_pairs(record, where):
                if grade > 0:
                    out.add(_question(record.get("question"), where), doc_id, grade)
        except DataFileError as err:
            raise _located(err, path, line) from None
    return out.build(_JSONL)


def _record_pairs(record: dict[str, Any], where: str) -> Iterable[tuple[str, int]]:
    if "question" not in record:
        msg = f"{where}: missing field 'question'; expected {_JSONL}, got fields {list(record)}"
        raise DataFileError(msg)
    _question(record["question"], where)
    if "doc_id" in record:
        if "doc_ids" in record:
            msg = f"{where}: give 'doc_id' or 'doc_ids', not both"
            raise DataFileError(msg)
        return [(_doc_id(record["doc_id"], where), _grade(record.get("grade", 1), where))]
    if "doc_ids" not in record:
        msg = f"{where}: missing field 'doc_id' (or 'doc_ids'); expected {_JSONL}"
        raise DataFileError(msg)
    ids = record["doc_ids"]
    if isinstance(ids, dict):  # {"doc": grade}
        pairs = [
            (_doc_id(d, where, "doc_ids"), _grade(g, where, "doc_ids")) for d, g in ids.items()
        ]
    elif isinstance(ids, list):
        grades = record.get("grades")
        if grades is None:
            grades = [1] * len(ids)
        elif not isinstance(grades, list) or len(grades) != len(ids):
            msg = (
                f"{where}: 'grades' must be a list with one grade per doc id ({len(ids)}), "
                f"got {_show(grades)}"
            )
            raise DataFileError(msg)
        pairs = [
            (_doc_id(d, where, "doc_ids"), _grade(g, where, "grades")) for d, g in zip(ids, grades)
        ]
    else:
        msg = f"{where}: 'doc_ids' must be a list of document ids, got {_show(ids)}"
        raise DataFileError(msg)
    if not pairs:
        msg = f"{where}: 'doc_ids' is empty; each question needs at least one document id"
        raise DataFileError(msg)
    return pairs


# ---------------------------------------------------------------------- CSV
def _read_csv(path: Path) -> PairSet:
    out = _Builder(str(path))
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                msg = f"{path}: empty file; expected a CSV with a header 'question,doc_id'"
                raise DataFileError(msg, path)
            columns = [h.strip().lower() for h in header]
            missing = [c for c in ("question", "doc_id") if c not in columns]
            if missing:
                msg = (
                    f"{path}:1: the header must name the columns 'question' and 'doc_id' "
                    f"(optionally 'grade'); got {header!r:.{_SHOWN}}"
                )
                raise DataFileError(msg, path, 1)
            q_col, d_col = columns.index("question"), columns.index("doc_id")
            g_col = columns.index("grade") if "grade" in columns else None
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path}:{line}"
                if len(row) != len(columns):
                    msg = (
                        f"{where}: expected {len(columns)} fields ({','.join(columns)}), got "
                        f"{len(row)}: {row!r:.{_SHOWN}} (quote questions that hold commas)"
                    )
                    raise DataFileError(msg, path, line)
                try:
                    question = _question(row[q_col], where)
                    doc_id = _doc_id(row[d_col], where)
                    grade = 1 if g_col is None else _grade(row[g_col], where)
                except DataFileError as err:
                    raise _located(err, path, line) from None
                if grade > 0:
                    out.add(question, doc_id, grade)
        except csv.Error as err:
            msg = f"{path}:{reader.line_num}: malformed CSV: {err}"
            raise DataFileError(msg, path, reader.line_num) from None
        except UnicodeDecodeError as err:
            msg = f"{path}: not valid UTF-8 text ({err.reason}); expected the file in UTF-8"
            raise DataFileError(msg, path) from None
    return out.build("a CSV with a header 'question,doc_id' and one pair per row")


# ---------------------------------------------------------------------- dataset JSON
def _read_dataset_json(path: Path) -> PairSet:
    dataset = RetrievalDataset.from_json(path)
    out = _Builder(str(path))
    grades = dataset.grades()
    for qid, docs in grades.items():
        where = f"{path}: query {qid!r}"
        question = _question(dataset.queries[qid], where)
        for doc_id, grade in docs.items():
            out.add(question, _doc_id(doc_id, where, "relevant_docs"), int(grade))
    return out.build("queries with relevant_docs")


# ---------------------------------------------------------------------- BEIR folder
def _qrels_splits(folder: Path) -> list[str]:
    found = (
        {p.stem for p in (folder / "qrels").glob("*.tsv")} if (folder / "qrels").is_dir() else set()
    )
    found |= {p.stem[len("qrels_") :] for p in folder.glob("qrels_*.tsv")}
    return sorted(found)


def _read_beir(folder: Path, split: str | None, name: str) -> PairSet:
    splits = _qrels_splits(folder)
    layout = (
        "expected a BEIR folder with queries.jsonl and qrels/<split>.tsv "
        "(or queries_<split>.jsonl and qrels_<split>.tsv)"
    )
    if split is None:
        if len(splits) != 1:
            found = ", ".join(splits) if splits else "none"
            msg = f"{name} {folder}: give --split (the qrels files found: {found}); {layout}"
            raise FileNotFoundError(msg)
        split = splits[0]
    qrels = next(
        (
            p
            for p in (folder / "qrels" / f"{split}.tsv", folder / f"qrels_{split}.tsv")
            if p.is_file()
        ),
        None,
    )
    if qrels is None:
        found = ", ".join(splits) if splits else "none"
        msg = f"{name} {folder}: no qrels for split {split!r} (splits found: {found}); {layout}"
        raise FileNotFoundError(msg)
    queries_path = next(
        (p for p in (folder / f"queries_{split}.jsonl", folder / "queries.jsonl") if p.is_file()),
        None,
    )
    if queries_path is None:
        msg = f"{name} {folder}: no queries.jsonl (nor queries_{split}.jsonl); {layout}"
        raise FileNotFoundError(msg)
    queries = read_texts(queries_path, ("_id", "q_index", "id"), kind="query")
    qids, dids, grades = read_qrels(qrels)
    unknown = list(dict.fromkeys(q for q in qids if q not in queries))
    if unknown:
        msg = (
            f"{qrels}: {len(unknown)} query id(s) are not in {queries_path.name}, e.g. "
            f"{unknown[:3]!r}"
        )
        raise DataFileError(msg, qrels)
    out = _Builder(str(folder))
    for qid, did, grade in zip(qids, dids, grades.tolist()):
        if grade > 0:
            out.add(queries[qid][0].strip(), did, int(grade))
    return out.build(f"judged queries in {qrels.name}")
