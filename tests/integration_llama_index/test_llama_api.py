"""The public API of llama_index_nudge is pinned."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import llama_index_nudge


def test_all_imports():
    assert sorted(llama_index_nudge.__all__) == sorted(
        [
            "AdaptedQueryEmbedding",
            "DEFAULT_QUESTIONS_KEY",
            "DEFAULT_QUESTION_PROMPT",
            "FeedbackRetriever",
            "Nudge",
            "NudgeFinetuneEngine",
            "adapter_for",
            "default_state_dir",
            "generate_questions",
            "parse_questions",
            "questions_from_metadata",
        ]
    )
    for name in llama_index_nudge.__all__:
        assert getattr(llama_index_nudge, name) is not None


def test_is_a_regular_package():
    assert llama_index_nudge.__file__ is not None
