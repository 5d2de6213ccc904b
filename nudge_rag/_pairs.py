"""Training pairs ``(question, doc_id)``: every accepted form in, one list out, grouped once.

Both integrations and the command line hand pairs to :class:`nudge_rag.StoreTuner` in any of
these forms; this module turns them into unique questions with the ids of the documents that
answer each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Pairs", "group_pairs", "normalize_pairs"]

Pairs = Any
"""Training pairs: ``[(question, doc_id), ...]``, ``{question: doc_id | [doc_ids]}``, a dataset
with ``.queries``, ``.corpus`` and ``.relevant_docs`` (LlamaIndex's
``EmbeddingQAFinetuneDataset``, :class:`nudge_rag.data.RetrievalDataset`), or the path of such a
dataset saved as JSON."""


def _is_dataset(obj: Any) -> bool:
    if isinstance(obj, Mapping):
        return all(k in obj for k in ("queries", "corpus", "relevant_docs"))
    return hasattr(obj, "relevant_docs") and hasattr(obj, "queries")


def _check_doc_id(doc_id: Any, name: str, where: str) -> str:
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        msg = f"{name}: the doc id {where} must be a non-empty string, got {doc_id!r:.80}"
        raise ValueError(msg)
    return str(doc_id)


def _check_question(question: Any, name: str, where: str) -> str:
    if not isinstance(question, str) or not question.strip():
        msg = f"{name}: question {where} must be a non-empty string, got {question!r:.80}"
        raise ValueError(msg)
    return question.strip()


def normalize_pairs(pairs: Pairs, name: str = "pairs") -> list[tuple[str, str]]:
    """Any accepted form of training pairs as a list of ``(question, doc_id)``.

    Questions are stripped; ids become strings. Duplicates are kept (:func:`group_pairs`
    drops them).

    Args:
        pairs: see :data:`Pairs`.
        name: the argument name used in error messages.

    Raises:
        ValueError: empty input, or an item that is not a question with document id(s)
            (the message names the item).
        TypeError: an object of no accepted form.
    """
    from nudge_rag._data import RetrievalDataset

    if isinstance(pairs, (str, os.PathLike)):
        if not os.path.isfile(pairs):
            msg = (
                f"{name} must be a list of (question, doc_id) pairs, a {{question: [doc_ids]}} "
                f"dict, a dataset, or the path of a dataset JSON file; got {str(pairs)!r:.80}, "
                "which is not an existing file"
            )
            raise ValueError(msg)
        pairs = RetrievalDataset.from_json(pairs)
    out: list[tuple[str, str]] = []
    if _is_dataset(pairs):
        dataset = RetrievalDataset.from_any(pairs)
        for query_id, doc_ids in dataset.relevant_docs.items():
            where = f"{query_id!r}"
            question = _check_question(dataset.queries[query_id], name, where)
            out.extend((question, _check_doc_id(d, name, f"of {where}")) for d in doc_ids)
    elif isinstance(pairs, Mapping):
        for question, ids in pairs.items():
            where = f"{question!r:.60}"
            question = _check_question(question, name, where)
            ids = [ids] if isinstance(ids, (str, int)) and not isinstance(ids, bool) else ids
            if not isinstance(ids, Sequence) or not ids:
                msg = (
                    f"{name}[{where}] must be a doc id or a non-empty list of doc ids, "
                    f"got {ids!r:.80}"
                )
                raise ValueError(msg)
            out.extend((question, _check_doc_id(d, name, f"of {where}")) for d in ids)
    elif isinstance(pairs, Iterable):
        for k, item in enumerate(pairs):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                msg = f"{name}[{k}] must be a (question, doc_id) pair, got {item!r:.80}"
                raise ValueError(msg)
            question = _check_question(item[0], name, f"{k}")
            out.append((question, _check_doc_id(item[1], name, f"of pair {k}")))
    else:
        msg = (
            f"{name} must be a list of (question, doc_id) pairs, a {{question: [doc_ids]}} "
            f"dict, a dataset with .queries/.corpus/.relevant_docs or its JSON path; got "
            f"{type(pairs).__name__}"
        )
        raise TypeError(msg)
    if not out:
        msg = f"{name} is empty: give at least one (question, doc_id) pair"
        raise ValueError(msg)
    return out


def group_pairs(
    pairs: Iterable[tuple[str, str]], name: str = "pairs"
) -> tuple[list[str], list[list[str]]]:
    """Unique questions (first-seen order) with the ids of the documents answering each.

    A repeated ``(question, doc_id)`` pair counts once; how many were dropped is logged.
    """
    answers: dict[str, dict[str, None]] = {}
    n_pairs = 0
    for question, doc_id in pairs:
        n_pairs += 1
        answers.setdefault(question, {})[doc_id] = None
    n_unique = sum(len(ids) for ids in answers.values())
    if n_unique < n_pairs:
        skipped = n_pairs - n_unique
        logger.warning("%s: skipped %d duplicate (question, doc_id) pair(s)", name, skipped)
    return list(answers), [list(ids) for ids in answers.values()]
