"""Training questions for NUDGE: parse them from node metadata, or generate them with an LLM.

LlamaIndex's ``QuestionsAnsweredExtractor`` stores one raw LLM answer per node under
``questions_this_excerpt_can_answer``: a string of numbered lines, often with a preamble
("Here are 3 questions this context can answer:"). :func:`parse_questions` turns such a string
(or a list of strings) into clean questions; :func:`generate_questions` asks any LlamaIndex
``LLM`` for questions about each node and parses the answer the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

try:
    from llama_index.core.llms import LLM
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.schema import BaseNode, MetadataMode
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err

from nudge_rag.pairs import parse_questions

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUESTIONS_KEY",
    "DEFAULT_QUESTION_PROMPT",
    "generate_questions",
    "parse_questions",
    "questions_from_metadata",
]

DEFAULT_QUESTIONS_KEY = "questions_this_excerpt_can_answer"

DEFAULT_QUESTION_PROMPT = PromptTemplate(
    "Here is an excerpt from a document:\n"
    "---------------------\n"
    "{context_str}\n"
    "---------------------\n"
    "Write {num_questions} different questions that a user might ask and that this excerpt "
    "answers. Write one question per line, numbered 1., 2., ... and nothing else.\n"
)


def questions_from_metadata(
    nodes: Iterable[BaseNode], key: str = DEFAULT_QUESTIONS_KEY
) -> tuple[list[tuple[str, str]], list[str]]:
    """Read ``(question, node_id)`` pairs from ``node.metadata[key]``.

    Logs a warning when ``key`` is part of the embedded text (not in the node's
    ``excluded_embed_metadata_keys``): the questions then already sit in the vector, which
    leaks training queries into the embedding and weakens what NUDGE can learn.

    Args:
        nodes: the nodes to read.
        key: the metadata key (default: ``QuestionsAnsweredExtractor``'s).

    Returns:
        ``(pairs, skipped)``: the pairs, and the ids of nodes whose value under ``key`` is
        missing, empty or malformed (each logged).
    """
    pairs: list[tuple[str, str]] = []
    skipped: list[str] = []
    malformed: list[tuple[str, str]] = []
    leaked = 0
    for node in nodes:
        value = node.metadata.get(key)
        try:
            questions = parse_questions(value)
        except TypeError as err:
            malformed.append((node.node_id, str(err)))
            skipped.append(node.node_id)
            continue
        if not questions:
            skipped.append(node.node_id)
            continue
        if key not in node.excluded_embed_metadata_keys:
            leaked += 1
        pairs.extend((q, node.node_id) for q in questions)
    if leaked:
        logger.warning(
            "%d node(s) embed metadata[%r] in their text (the key is not in "
            "excluded_embed_metadata_keys): the training questions are inside the embedded "
            "text. Add the key to node.excluded_embed_metadata_keys before indexing.",
            leaked,
            key,
        )
    if malformed:  # one summary, not one line per node
        logger.warning(
            "%d node(s) skipped: metadata[%r] is not a string or list of strings, e.g. node %s: %s",
            len(malformed),
            key,
            *malformed[0],
        )
    if skipped:
        logger.info("%d node(s) have no usable questions under metadata[%r]", len(skipped), key)
    return pairs, skipped


def generate_questions(
    nodes: Iterable[BaseNode],
    llm: LLM,
    num_questions: int = 3,
    prompt: PromptTemplate | str | None = None,
) -> list[tuple[str, str]]:
    """Ask ``llm`` for ``num_questions`` questions about each node.

    Args:
        nodes: the nodes (their text, without metadata, is shown to the LLM).
        llm: any LlamaIndex ``LLM`` (``llm.complete`` is called once per node).
        num_questions: questions kept per node (extra lines are dropped).
        prompt: a template with ``{context_str}`` and ``{num_questions}``; default
            :data:`DEFAULT_QUESTION_PROMPT`.

    Returns:
        ``(question, node_id)`` pairs.

    Raises:
        ValueError: ``num_questions`` is not a positive integer.
    """
    if not isinstance(num_questions, int) or isinstance(num_questions, bool) or num_questions < 1:
        msg = f"num_questions must be a positive integer, got {num_questions!r}"
        raise ValueError(msg)
    template: Any = DEFAULT_QUESTION_PROMPT if prompt is None else prompt
    if isinstance(template, str):
        template = PromptTemplate(template)
    pairs: list[tuple[str, str]] = []
    empty: list[str] = []
    for node in nodes:
        context = node.get_content(metadata_mode=MetadataMode.NONE)
        answer = llm.complete(
            template.format(context_str=context, num_questions=num_questions)
        ).text
        # strict: a refusal ("I cannot help with that.") is no question (as in LangChain)
        questions = parse_questions(answer, strict=True)[:num_questions]
        if not questions:
            empty.append(node.node_id)
        pairs.extend((q, node.node_id) for q in questions)
    if empty:
        logger.warning(
            "the LLM gave no parsable question for %d node(s), e.g. %s", len(empty), empty[:3]
        )
    return pairs
