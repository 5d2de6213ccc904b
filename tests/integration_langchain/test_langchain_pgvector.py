"""LangChain's ``PGVector`` (langchain-postgres) on a real PostgreSQL + pgvector server.

The stored vectors are tuned in place through ``NudgeRetriever``; text and metadata stay;
the originals live in side tables of the same database, so a new retriever (another process)
restores them without any folder. nfcorpus: the stored MiniLM vectors loaded with the
wrapper's ``add_embeddings`` (batches, no re-embedding) into a COSINE collection with no ANN
index (a sequential scan: exact search), train pairs with dev pairs for validation, the
retriever on the test queries: nDCG@10 before, after (within 0.005 of ``NudgeN`` on the
arrays) and after restore (within 0.002 of before), originals back to float32 rounding, every
document's text and metadata unchanged after fit and after restore.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import logging
import urllib.parse
import uuid

import numpy as np
from langchain_helpers import (
    LookupEmbeddings,
    exact_ndcg,
    query_vectors,
    ranked_ndcg,
    split_pairs,
    toy_vectors,
)
from langchain_nudge import NudgeRetriever

from nudge_rag import MetricMismatchError, NudgeN

pytest.importorskip("langchain_postgres", reason="pip install 'nudge-rag[postgres]'")

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------- nfcorpus
K = 10


def _database(pg_url: str) -> str:
    """A new database (pgvector created) on the session's server, as a SQLAlchemy URL.

    ``langchain_pg_embedding.id`` is unique across collections, so the nfcorpus doc ids get
    a database of their own rather than sharing the table with other tests.
    """
    import psycopg

    name = f"nf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlsplit(pg_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.mark.slow  # end to end on nfcorpus: 15-36 s
def test_nfcorpus_end_to_end(nfcorpus, pg_url):
    from langchain_postgres import PGVector
    from langchain_postgres.vectorstores import DistanceStrategy

    ds = nfcorpus
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    tuned = exact_ndcg(ds, NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset()).embeddings_)
    ids = list(ds.doc_ids)
    metadatas = [{"row": k, "title": f"doc {ids[k]}"} for k in range(len(ids))]
    embeddings = LookupEmbeddings(query_vectors(ds))
    store = PGVector(
        embeddings=embeddings,
        collection_name="nfcorpus",
        connection=_database(pg_url),
        distance_strategy=DistanceStrategy.COSINE,
        embedding_length=docs.shape[1],  # a vector(384) column; no HNSW / IVFFlat index
        use_jsonb=True,
        create_extension=False,
    )
    for s in range(0, len(ids), 1000):  # the stored vectors, not re-embedded
        store.add_embeddings(
            ds.doc_texts[s : s + 1000],
            docs[s : s + 1000].tolist(),
            metadatas[s : s + 1000],
            ids=ids[s : s + 1000],
        )
    assert embeddings.document_calls == 0
    retriever = NudgeRetriever(vectorstore=store, k=K)
    assert retriever.store.distance == "cosine" and retriever.writeback.state_dir is None
    np.testing.assert_array_equal(retriever.store.get_vectors(ids), docs)
    queries = list(ds.test.query_texts)

    def ndcg() -> float:
        return ranked_ndcg(ds, [[d.id for d in hits] for hits in retriever.batch(queries)], K)

    def rows() -> dict[str, tuple]:
        return {d.id: (d.page_content, d.metadata) for d in store.get_by_ids(ids)}

    stored = rows()
    assert stored == {i: (ds.doc_texts[k], metadatas[k]) for k, i in enumerate(ids)}
    before = ndcg()
    retriever.fit(split_pairs(ds, "train"), val_pairs=split_pairs(ds, "dev"))
    moved = retriever.tune_result.changed_ids
    after = ndcg()
    assert rows() == stored
    assert retriever.restore() == len(moved)
    restored = ndcg()
    logger.warning(
        "LangChain PGVector (COSINE, no index: exact) nDCG@10: before %.4f, after %.4f "
        "(arrays %.4f), restored %.4f",
        before,
        after,
        tuned,
        restored,
    )
    assert before == pytest.approx(exact_ndcg(ds, docs), abs=0.002)
    assert after == pytest.approx(tuned, abs=0.005)
    assert restored == pytest.approx(before, abs=0.002)
    np.testing.assert_allclose(retriever.store.get_vectors(ids), docs, rtol=0, atol=1e-7)
    assert rows() == stored
