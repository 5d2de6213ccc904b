"""Question parsing and generation."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import logging

from llama_helpers import FixedLLM
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index_nudge import (
    DEFAULT_QUESTIONS_KEY,
    generate_questions,
    parse_questions,
    questions_from_metadata,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # QuestionsAnsweredExtractor style: a preamble, then numbered lines.
        (
            "Here are 3 questions this context can answer:\n\n1. What is A?\n2. What is B?\n3. What is C?",
            ["What is A?", "What is B?", "What is C?"],
        ),
        ("1) What is A?\n2) What is B?", ["What is A?", "What is B?"]),
        ("- What is A?\n* What is B?\n• What is C?", ["What is A?", "What is B?", "What is C?"]),
        (
            "Q1: What is A?\nQuestion 2: What is B?\nq3. What is C?",
            ["What is A?", "What is B?", "What is C?"],
        ),
        # A closing remark after numbered lines is dropped; duplicates are dropped.
        ("1. What is A?\n2. What is A?\nI hope these help.", ["What is A?"]),
        # Unnumbered lines: all but preambles are kept.
        ("Sure! Questions:\nWhat is A?\nWhat is B", ["What is A?", "What is B"]),
        ("", []),
        (None, []),
        # A list holds one question per item, kept as written (numbers in a question stay).
        (["  1984 and what?  ", "", "What is B?"], ["1984 and what?", "What is B?"]),
    ],
)
def test_parse_questions(raw, expected):
    assert parse_questions(raw) == expected


@pytest.mark.parametrize("raw", [42, {"q": "x"}, ["ok", 3]])
def test_parse_questions_rejects_other_types(raw):
    with pytest.raises(TypeError, match="questions must be a string or a list of strings"):
        parse_questions(raw)


def test_questions_from_metadata_skips_missing_and_malformed(caplog):
    nodes = [
        TextNode(
            id_="a",
            text="a",
            metadata={DEFAULT_QUESTIONS_KEY: "1. What is A?"},
            excluded_embed_metadata_keys=[DEFAULT_QUESTIONS_KEY],
        ),
        TextNode(id_="b", text="b"),
        TextNode(
            id_="c",
            text="c",
            metadata={DEFAULT_QUESTIONS_KEY: 7},
            excluded_embed_metadata_keys=[DEFAULT_QUESTIONS_KEY],
        ),
    ]
    with caplog.at_level(logging.INFO, logger="llama_index_nudge"):
        pairs, skipped = questions_from_metadata(nodes)
    assert pairs == [("What is A?", "a")]
    assert skipped == ["b", "c"]
    assert (
        "1 node(s) skipped: metadata['questions_this_excerpt_can_answer'] is not a string or list of strings, e.g. node c"
        in caplog.text
    )


def test_questions_in_embedded_text_are_warned_about(caplog):
    nodes = [TextNode(id_="a", text="a", metadata={"qs": ["What is A?"]})]
    with caplog.at_level(logging.WARNING, logger="llama_index_nudge"):
        pairs, _ = questions_from_metadata(nodes, key="qs")
    assert pairs == [("What is A?", "a")]
    assert "excluded_embed_metadata_keys" in caplog.text


def test_generate_questions_with_an_llm():
    llm = FixedLLM(answer="Here are 2 questions:\n1. What is A?\n2. Why B?\n3. Extra?", prompts=[])
    nodes = [
        TextNode(id_="a", text="alpha text", metadata={"secret": "s"}),
        TextNode(id_="b", text="beta"),
    ]
    pairs = generate_questions(nodes, llm, num_questions=2)
    assert pairs == [("What is A?", "a"), ("Why B?", "a"), ("What is A?", "b"), ("Why B?", "b")]
    assert "alpha text" in llm.prompts[0] and "2 different questions" in llm.prompts[0]
    assert "secret" not in llm.prompts[0]


def test_generate_questions_with_mock_llm_and_bad_count():
    # MockLLM echoes the prompt: its numbered instruction line is not a question list.
    pairs = generate_questions([TextNode(id_="a", text="alpha")], MockLLM(), num_questions=1)
    assert all(node_id == "a" for _, node_id in pairs)
    with pytest.raises(ValueError, match="num_questions must be a positive integer"):
        generate_questions([], MockLLM(), num_questions=0)
