"""LangChain's ``PGVector`` (langchain-postgres) on a real PostgreSQL + pgvector server.

The stored vectors are tuned in place through ``NudgeRetriever``; text and metadata stay;
the originals live in side tables of the same database, so a new retriever (another process)
restores them without any folder. nfcorpus end to end: ``test_langchain_nfcorpus.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import uuid

import numpy as np
from langchain_helpers import (
    LookupEmbeddings,
    toy_vectors,
)
from langchain_nudge import NudgeRetriever

from nudge_rag import MetricMismatchError

pytest.importorskip("langchain_postgres", reason="pip install 'nudge-rag[postgres]'")


TEXTS = [f"passage {i}" for i in range(12)]
QUESTIONS = [f"question {i}?" for i in range(12)]


IDS: list[str] = []  # fresh per test: the embedding table's id is unique across collections


@pytest.fixture(autouse=True)
def _fresh_ids():
    IDS[:] = [str(uuid.uuid4()) for _ in range(12)]


def _store(pg_url, strategy="cosine"):
    from langchain_postgres import PGVector
    from langchain_postgres.vectorstores import DistanceStrategy

    vectors = toy_vectors(TEXTS + QUESTIONS, dim=8)
    store = PGVector(
        embeddings=LookupEmbeddings(vectors),
        collection_name=f"nudge-{uuid.uuid4().hex[:8]}",
        connection=pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
        distance_strategy=DistanceStrategy.COSINE
        if strategy == "cosine"
        else DistanceStrategy.EUCLIDEAN,
        use_jsonb=True,
    )
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(12)])
    return store


def _vectors(store) -> np.ndarray:
    return NudgeRetriever(vectorstore=store).store.get_vectors(IDS)


def test_fit_restore_keeps_text_and_metadata(pg_url):
    store = _store(pg_url)
    before = _vectors(store).copy()
    retriever = NudgeRetriever(vectorstore=store, k=3, solver_params={"gamma": 0.3})
    assert retriever.writeback.state_dir is None  # originals in the database, no folder
    retriever.fit([(QUESTIONS[i], IDS[i]) for i in range(12)])
    moved = retriever.tune_result.changed_ids
    assert moved
    assert not np.allclose(_vectors(store), before)
    docs = {d.id: d for d in store.get_by_ids(IDS)}  # in any order
    assert [docs[i].page_content for i in IDS] == TEXTS
    assert [docs[i].metadata["i"] for i in IDS] == list(range(12))
    assert len(retriever.invoke("question 3?")) == 3

    again = NudgeRetriever(vectorstore=store)  # a new object, as another process would be
    assert again.restore() == len(moved)
    np.testing.assert_allclose(_vectors(store), before, atol=1e-6)
    assert sorted(d.page_content for d in store.get_by_ids(IDS)) == sorted(TEXTS)


def test_nudge_m_on_a_cosine_table_is_refused_before_writing(pg_url):
    store = _store(pg_url)
    before = _vectors(store).copy()
    retriever = NudgeRetriever(vectorstore=store, variant="m")
    with pytest.raises(MetricMismatchError):
        retriever.fit([(QUESTIONS[0], IDS[0])])
    np.testing.assert_array_equal(_vectors(store), before)
