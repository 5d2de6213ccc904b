"""The shared question parser (used by both integrations)."""

from __future__ import annotations

import pytest

from nudge_rag._questions import parse_questions


@pytest.mark.parametrize(
    ("raw", "strict", "expected"),
    [
        # QuestionsAnsweredExtractor-style answer: preamble and numbering dropped
        ("Here are 2 questions:\n\n1. What is A?\n2) Why B?\n", False, ["What is A?", "Why B?"]),
        ("**1.** What is A?\n**2.** Why B?", False, ["What is A?", "Why B?"]),
        ('Q1: "What is A?"\n- Why B?\n- Why B?', False, ["What is A?", "Why B?"]),
        # real nfcorpus queries: a "#" after the number and a lone trailing quote are text
        (
            "1. #1 anticancer vegetable\n2. comparing vegans ' arteries to runners '",
            False,
            ["#1 anticancer vegetable", "comparing vegans ' arteries to runners '"],
        ),
        # unnumbered: every non-preamble line, or with strict only the questions
        ("Sure! Questions:\nWhat is A?\nWhat is B", False, ["What is A?", "What is B"]),
        ("What is A?\nI cannot think of more.", True, ["What is A?"]),
        (["  What is A?  ", "", "What is A?", "B'"], False, ["What is A?", "B'"]),
        (None, False, []),
    ],
)
def test_parse_questions(raw, strict, expected):
    assert parse_questions(raw, strict=strict) == expected


def test_parse_questions_refuses_other_types():
    with pytest.raises(TypeError, match="questions must be a string or a list of strings, got int"):
        parse_questions(3)
