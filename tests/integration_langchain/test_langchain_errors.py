"""Bad input gives a clear error and leaves the store exactly as it was."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_helpers import LookupEmbeddings, toy_vectors
from langchain_nudge import NudgeRetriever, store_for
from numpy.testing import assert_array_equal

from nudge_rag import WriteBackError
from nudge_rag.backends import InMemoryVectorStoreBackend

TEXTS = [f"passage {i}" for i in range(6)]
IDS = [f"doc-{i}" for i in range(6)]
QUESTIONS = [f"question {i}?" for i in range(6)]
PAIRS = [(QUESTIONS[i], IDS[i]) for i in range(4)]


def _store(metadatas=None) -> InMemoryVectorStore:
    vectors = toy_vectors(TEXTS + QUESTIONS, dim=8)
    vectors["short question?"] = np.ones(4) / 2
    store = InMemoryVectorStore(LookupEmbeddings(vectors))
    store.add_texts(TEXTS, ids=IDS, metadatas=metadatas)
    return store


def _snapshot(store) -> np.ndarray:
    return store_for(store).get_vectors(IDS).copy()


@pytest.fixture
def store():
    store = _store()
    before = _snapshot(store)
    yield store
    assert_array_equal(_snapshot(store), before)  # never half-written


def test_unknown_doc_id(store):
    with pytest.raises(KeyError, match="nope"):
        NudgeRetriever(vectorstore=store).fit([*PAIRS, ("question 5?", "nope")])


def test_documents_without_ids(store):
    docs = [Document(page_content="x", metadata={"q": ["question 1?"]})]
    with pytest.raises(ValueError, match="have no id"):
        NudgeRetriever(vectorstore=store).fit(metadata_key="q", documents=docs)


def test_empty_store():
    empty = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    with pytest.raises(ValueError, match="store is empty"):
        NudgeRetriever(vectorstore=empty).fit([("q?", "a")])
    with pytest.raises(ValueError, match="store is empty"):
        NudgeRetriever(vectorstore=empty).fit(metadata_key="q")


def test_dimension_mismatch(store):
    with pytest.raises(ValueError, match=r"shape \(1, 4\).*8-dimensional"):
        NudgeRetriever(vectorstore=store).fit([("short question?", "doc-0")])


def test_metric_mismatch(store):
    with pytest.raises(ValueError, match="scored by dot product.*scores by cosine"):
        NudgeRetriever(vectorstore=store, variant="m").fit(PAIRS)


def test_nudge_n_on_l2_store_with_unnormalized_vectors():
    pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    from langchain_chroma import Chroma

    vectors = {t: 3 * v for t, v in toy_vectors(TEXTS, dim=8).items()}
    vectors.update(toy_vectors(QUESTIONS, dim=8, seed=1))
    chroma = Chroma("l2-test", embedding_function=LookupEmbeddings(vectors))
    chroma.add_texts(TEXTS, ids=IDS)
    before = _snapshot(chroma)
    with pytest.raises(ValueError, match="hnsw:space': 'cosine'"):
        NudgeRetriever(vectorstore=chroma).fit(PAIRS)
    assert_array_equal(_snapshot(chroma), before)


def test_malformed_metadata():
    store = _store(metadatas=[{"q": ["question 0?"]}, {"q": {"bad": 1}}] + [{}] * 4)
    before = _snapshot(store)
    with pytest.raises(ValueError, match=r"metadata\['q'\] of document 'doc-1'"):
        NudgeRetriever(vectorstore=store).fit(metadata_key="q")
    assert_array_equal(_snapshot(store), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of pairs, metadata_key or llm; got none"),
        ({"pairs": PAIRS, "metadata_key": "q"}, r"got \['pairs', 'metadata_key'\]"),
        ({"pairs": [("only",)]}, r"pairs\[0\]"),
        ({"pairs": PAIRS, "val_pairs": {"q": []}}, "val_pairs"),
    ],
)
def test_bad_fit_arguments(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NudgeRetriever(vectorstore=store).fit(**kwargs)


def test_bad_variant(store):
    with pytest.raises(ValueError, match="variant"):
        NudgeRetriever(vectorstore=store, variant="x")


class _NoVectorsStore(VectorStore):
    """A vector store with no way to read its stored vectors."""

    def add_texts(self, texts, metadatas=None, **kwargs: Any) -> list[str]:
        return []

    def similarity_search(self, query, k=4, **kwargs: Any) -> list[Document]:
        return []

    @classmethod
    def from_texts(cls, texts, embedding, metadatas=None, **kwargs: Any):
        return cls()


def test_store_we_cannot_read():
    retriever = NudgeRetriever(vectorstore=_NoVectorsStore())
    assert retriever.invoke("q") == []  # searching still works
    with pytest.raises(
        TypeError,
        match="cannot read and write the stored vectors of _NoVectorsStore. Supported: Chroma",
    ):
        retriever.fit(PAIRS)


class _FlakyStore(InMemoryVectorStoreBackend):
    """Fails on the first write batch, once."""

    def __init__(self, vectorstore):
        super().__init__(vectorstore)
        self.calls = 0

    def set_vectors(self, ids, vectors):
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("store went away")
        super().set_vectors(ids, vectors)


def test_interrupted_write_resumes_and_restores(tmp_path):
    store = _store()
    before = _snapshot(store)
    retriever = NudgeRetriever(
        vectorstore=store,
        embedding_store=_FlakyStore(store),
        batch_size=1,
        state_dir=tmp_path / "state",
        solver_params={"gamma": 0.5},
    )
    with pytest.raises(WriteBackError, match="call resume"):
        retriever.fit(PAIRS)
    with pytest.raises(WriteBackError, match="pending"):
        retriever.fit(PAIRS)
    assert retriever.resume() is True
    assert not np.array_equal(_snapshot(store), before)
    retriever.restore()
    assert_array_equal(_snapshot(store), before)


def test_unknown_keyword_is_refused(store):
    with pytest.raises(ValueError, match="typo"):
        NudgeRetriever(vectorstore=store, k=2, typo=1)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_invoke_k_must_be_a_positive_integer(store, k):
    retriever = NudgeRetriever(vectorstore=store, k=2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke("passage 1", k=k)
    assert len(retriever.invoke("passage 1", k=3)) == 3


def test_unknown_doc_id_is_one_error_class_for_both_frameworks(store):
    from nudge_rag import UnknownIdError

    retriever = NudgeRetriever(vectorstore=store, state_dir="memory")
    with pytest.raises(UnknownIdError) as info:
        retriever.fit([(QUESTIONS[0], "nope")])
    assert info.value.ids == ["nope"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
