"""Training pairs: explicit lists, metadata, LLM generation, robust parsing."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, toy_vectors
from langchain_nudge import (
    NudgeRetriever,
    generate_pairs,
    normalize_pairs,
    pairs_from_metadata,
    parse_questions,
)
from langchain_nudge.questions import group_pairs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Here are 3 questions about the passage:\n1. What is A?\n2) Why B?\n3 - How C?",
            ["What is A?", "Why B?", "How C?"],
        ),
        ("Q1: What is A?\nQ2: Why B?\n\nHope this helps!", ["What is A?", "Why B?"]),
        ("**1.** What is A?\n**2.** Why B?", ["What is A?", "Why B?"]),
        ("Question 1: What is A?\nQuestion 2: Why B?", ["What is A?", "Why B?"]),
        ("- What is A?\n* Why B?\n• How C?", ["What is A?", "Why B?", "How C?"]),
        ("Sure! Here you go:\nWhat is A?\nWhy B?", ["What is A?", "Why B?"]),
        ('1. "What is A?"\n2. What is A?', ["What is A?"]),
        ("What is A\nWhy B", ["What is A", "Why B"]),
        ("", []),
    ],
)
def test_parse_questions(text, expected):
    assert parse_questions(text) == expected


def test_normalize_pairs_forms():
    assert normalize_pairs([("q1", "a"), ["q2", 3]]) == [("q1", "a"), ("q2", "3")]
    assert normalize_pairs({"q1": "a", "q2": ["b", "c"]}) == [("q1", "a"), ("q2", "b"), ("q2", "c")]


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([], "empty"),
        ([("only a question",)], r"pairs\[0\] must be a \(question, doc_id\) pair"),
        ([("", "a")], "non-empty string"),
        ([("q", None)], "the doc id of pair 0 must be a non-empty string"),
        ({"q": []}, "non-empty list of doc ids"),
        ("q", "must be a list"),
    ],
)
def test_normalize_pairs_rejects(pairs, match):
    with pytest.raises(ValueError, match=match):
        normalize_pairs(pairs)


def test_group_pairs_merges_answers():
    questions, ids = group_pairs([("q1", "a"), ("q2", "b"), ("q1", "c"), ("q1", "a")])
    assert questions == ["q1", "q2"]
    assert ids == [["a", "c"], ["b"]]


def test_pairs_from_metadata_list_and_raw_string():
    docs = [
        Document(id="a", page_content="A", metadata={"questions": ["What is A?", " "]}),
        Document(id="b", page_content="B", metadata={"questions": "Sure:\n1. Why B?\n2. How B?"}),
        Document(id="c", page_content="C", metadata={}),
    ]
    assert pairs_from_metadata(docs, "questions") == [
        ("What is A?", "a"),
        ("Why B?", "b"),
        ("How B?", "b"),
    ]


def test_pairs_from_metadata_errors():
    with pytest.raises(ValueError, match=r"metadata\['questions'\] of document 'a'"):
        pairs_from_metadata(
            [Document(id="a", page_content="A", metadata={"questions": 42})], "questions"
        )
    with pytest.raises(ValueError, match="list of strings"):
        pairs_from_metadata(
            [Document(id="a", page_content="A", metadata={"questions": ["ok?", 3]})], "questions"
        )
    with pytest.raises(ValueError, match="no document has questions"):
        pairs_from_metadata([Document(id="a", page_content="A")], "questions")
    with pytest.raises(ValueError, match="have no id"):
        pairs_from_metadata([Document(page_content="A", metadata={"q": ["x?"]})], "q")


def test_generate_pairs_with_fake_chat_model(caplog):
    docs = [Document(id="a", page_content="A"), Document(id="b", page_content="B")]
    llm = FakeListChatModel(
        responses=["Here are questions:\n1. What is A?\n2. Why A?\n3. How A?\n4. Extra?", "no idea"]
    )
    pairs = generate_pairs(llm, docs, n_questions=3, max_concurrency=1)
    assert pairs == [("What is A?", "a"), ("Why A?", "a"), ("How A?", "a")]
    assert "no parsable question for 1 document" in caplog.text


def test_generate_pairs_errors():
    docs = [Document(id="a", page_content="A")]
    with pytest.raises(ValueError, match="n_questions must be a positive int"):
        generate_pairs(FakeListChatModel(responses=["1. x?"]), docs, n_questions=0)
    with pytest.raises(ValueError, match="no parsable question for any"):
        generate_pairs(FakeListChatModel(responses=[""]), docs)


def _store_with_questions():
    texts = ["alpha text", "beta text", "gamma text", "delta text"]
    questions = ["what is alpha?", "what is beta?", "alpha question two?", "beta question two?"]
    store = InMemoryVectorStore(LookupEmbeddings(toy_vectors(texts + questions, dim=8)))
    store.add_documents(
        [
            Document(
                page_content="alpha text",
                metadata={"qs": "1. what is alpha?\n2. alpha question two?"},
            ),
            Document(
                page_content="beta text", metadata={"qs": ["what is beta?", "beta question two?"]}
            ),
            Document(page_content="gamma text"),
            Document(page_content="delta text"),
        ],
        ids=["a", "b", "c", "d"],
    )
    return store


def test_fit_from_metadata_moves_documents_toward_their_questions():
    store = _store_with_questions()
    retriever = NudgeRetriever(vectorstore=store, k=1, solver_params={"gamma": 0.5})
    retriever.fit(metadata_key="qs")
    changed = set(retriever.tune_result.changed_ids)
    assert "a" in changed and changed <= {"a", "b"}  # only documents with questions move
    assert [d.id for d in retriever.invoke("what is alpha?")] == ["a"]


def test_fit_from_generated_questions():
    store = _store_with_questions()
    llm = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage("Sure! Questions:\n1. what is alpha?\n2. alpha question two?"),
                AIMessage("1. what is beta?"),
                AIMessage("I cannot think of any."),
                AIMessage("1. beta question two?"),
            ]
        )
    )
    retriever = NudgeRetriever(vectorstore=store, k=2, solver_params={"gamma": 0.5})
    retriever.fit(llm=llm, n_questions=2, max_concurrency=1)
    changed = set(retriever.tune_result.changed_ids)
    assert "a" in changed and changed <= {"a", "b", "d"}  # "c" got no question
    assert retriever.restore() == len(changed)
