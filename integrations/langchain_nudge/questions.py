"""Training pairs for NUDGE: ``(question, doc_id)`` from lists, metadata or an LLM.

Every source ends as a list of ``(question, doc_id)`` pairs. :func:`normalize_pairs` and
:func:`group_pairs` are the core's (:mod:`nudge_rag`), shared with the LlamaIndex integration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_nudge._compat import Document
from nudge_rag.pairs import group_pairs, normalize_pairs, parse_questions

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROMPT",
    "generate_pairs",
    "group_pairs",
    "normalize_pairs",
    "pairs_from_metadata",
    "parse_questions",
]

DEFAULT_PROMPT = (
    "Write {n} different questions that a user could ask and that the passage below "
    "answers. Each question must make sense on its own, without the passage.\n"
    "Answer with the questions only, one per line, numbered 1. to {n}.\n\n"
    "Passage:\n{text}\n"
)


def _doc_ids(documents: Sequence[Document]) -> list[str]:
    missing = [k for k, doc in enumerate(documents) if not getattr(doc, "id", None)]
    if missing:
        msg = (
            f"{len(missing)} document(s) have no id (e.g. positions {missing[:3]}); NUDGE writes "
            "vectors by id: pass documents read from the store (they carry Document.id)"
        )
        raise ValueError(msg)
    return [str(doc.id) for doc in documents]


def pairs_from_metadata(documents: Sequence[Document], key: str) -> list[tuple[str, str]]:
    """Pairs from a metadata field holding each document's questions.

    The field may hold a list of strings or one string (e.g. a raw LLM answer with numbered
    lines, parsed by :func:`parse_questions`). Documents without the field are skipped.

    Args:
        documents: documents with ids (``Document.id``).
        key: the metadata key.

    Raises:
        ValueError: a document without id, a malformed field (the document is named), or no
            document with questions.
    """
    ids = _doc_ids(documents)
    pairs: list[tuple[str, str]] = []
    for doc_id, doc in zip(ids, documents, strict=True):
        value = (doc.metadata or {}).get(key)
        if value is None:
            continue
        if isinstance(value, str):
            questions = parse_questions(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            questions = [v.strip() for v in value if v.strip()]
        else:
            msg = (
                f"metadata[{key!r}] of document {doc_id!r} must be a list of strings or a string "
                f"of questions, got {type(value).__name__}: {value!r:.80}"
            )
            raise ValueError(msg)
        pairs.extend((q, doc_id) for q in questions)
    if not pairs:
        msg = f"no document has questions under metadata key {key!r} ({len(documents)} checked)"
        raise ValueError(msg)
    return pairs


def _text_of(answer: Any) -> str:
    content = getattr(answer, "content", answer)
    if isinstance(content, list):  # content blocks
        content = "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def generate_pairs(
    llm: Any,
    documents: Sequence[Document],
    *,
    n_questions: int = 3,
    prompt: str = DEFAULT_PROMPT,
    max_concurrency: int | None = None,
) -> list[tuple[str, str]]:
    """Ask a LangChain chat model or LLM for ``n_questions`` questions per document.

    The documents are sent with ``llm.batch`` (one prompt each); answers are parsed with
    :func:`parse_questions` and the first ``n_questions`` kept. A document whose answer
    holds no question is skipped with a warning.

    Args:
        llm: any LangChain ``Runnable`` taking a string (chat model or LLM).
        documents: documents with ids.
        n_questions: questions per document.
        prompt: template with ``{n}`` and ``{text}`` placeholders.
        max_concurrency: passed to ``llm.batch``.

    Raises:
        ValueError: bad ``n_questions``, documents without ids, or no question at all.
    """
    if not isinstance(n_questions, int) or isinstance(n_questions, bool) or n_questions < 1:
        msg = f"n_questions must be a positive int, got {n_questions!r}"
        raise ValueError(msg)
    ids = _doc_ids(documents)
    prompts = [prompt.format(n=n_questions, text=doc.page_content) for doc in documents]
    config = {"max_concurrency": max_concurrency} if max_concurrency else None
    answers = llm.batch(prompts, config=config)
    pairs: list[tuple[str, str]] = []
    empty = 0
    for doc_id, answer in zip(ids, answers, strict=True):
        questions = parse_questions(_text_of(answer), strict=True)[:n_questions]
        empty += not questions
        pairs.extend((q, doc_id) for q in questions)
    if empty:
        logger.warning("the LLM gave no parsable question for %d document(s)", empty)
    if not pairs:
        msg = f"the LLM gave no parsable question for any of {len(documents)} document(s)"
        raise ValueError(msg)
    logger.info("generated %d questions for %d documents", len(pairs), len(documents))
    return pairs
