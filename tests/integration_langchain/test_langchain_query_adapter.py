"""query_adapter through LangChain's NudgeRetriever on nfcorpus (InMemoryVectorStore).

Documents carry their stored all-MiniLM-L6-v2 vectors (a lookup double serves them and the
questions by text); test nDCG@10 is measured through ``invoke`` (``batch``). Issue 22's
targets: >= 0.459 with dev as validation, >= 0.465 cross-validated, 0.322 after restore().
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_helpers import (
    LookupEmbeddings,
    exact_ndcg,
    query_vectors,
    ranked_ndcg,
    split_pairs,
)
from langchain_nudge import NudgeRetriever

from nudge_rag import FeedbackLog

logger = logging.getLogger(__name__)

K = 10


@pytest.fixture(scope="module")
def lookup(nfcorpus):
    ds = nfcorpus
    vectors = dict(zip(ds.doc_texts, np.asarray(ds.doc_embeddings), strict=True))
    vectors.update(query_vectors(ds))
    return LookupEmbeddings(vectors, as_arrays=True)


def new_store(ds, lookup) -> InMemoryVectorStore:
    store = InMemoryVectorStore(lookup)
    store.add_texts(ds.doc_texts, ids=list(ds.doc_ids))
    return store


def test_ndcg(retriever: NudgeRetriever, ds) -> float:
    results = retriever.batch(list(ds.test.query_texts), config={"max_concurrency": 4}, k=K)
    return ranked_ndcg(ds, [[d.id for d in docs] for docs in results], K)


test_ndcg.__test__ = False  # a helper, not a test


def test_on_with_dev_as_validation(nfcorpus, lookup):
    ds = nfcorpus
    retriever = NudgeRetriever(
        vectorstore=new_store(ds, lookup), k=K, state_dir="memory", query_adapter="on"
    )
    retriever.fit(split_pairs(ds, "train"), val_pairs=split_pairs(ds, "dev"))
    result = retriever.tune_result
    tuned = test_ndcg(retriever, ds)
    logger.warning("query_adapter='on', dev as val: %.4f (%s)", tuned, result.query_adapter_reason)
    assert result.query_adapter is not None and result.query_adapter_scores["chosen_by"] == "val"
    assert tuned >= 0.459


def test_persisted_adapter_found_later_and_removed_by_restore(nfcorpus, lookup, tmp_path):
    ds = nfcorpus
    store = new_store(ds, lookup)
    retriever = NudgeRetriever(vectorstore=store, k=K, state_dir=tmp_path, query_adapter="on")
    retriever.fit(split_pairs(ds, "train"), val_pairs=split_pairs(ds, "dev"))
    adapter = retriever.tune_result.query_adapter
    # A retriever opened later (default query_adapter="off") finds and applies the adapter.
    later = NudgeRetriever(vectorstore=store, k=K, state_dir=tmp_path)
    assert later.saved_query_adapter() is not None
    assert later.status().query_adapter["lambda"] == adapter.lambda_
    question = ds.test.query_texts[0]
    adapted = adapter.transform(np.asarray(lookup.embed_query(question))).tolist()
    expected = [d.id for d in store.similarity_search_by_vector(adapted, k=K)]
    assert [d.id for d in later.invoke(question)] == expected
    retriever.restore()
    assert later.saved_query_adapter() is None and later.status().query_adapter is None
    restored = test_ndcg(later, ds)
    untuned = exact_ndcg(ds, np.asarray(ds.doc_embeddings, dtype=np.float32), K)
    logger.warning("after restore: %.4f (untuned, exact: %.4f)", restored, untuned)
    assert untuned == pytest.approx(0.322, abs=0.001)
    assert restored == pytest.approx(untuned, abs=0.002)


def test_on_cross_validated(nfcorpus, lookup):
    ds = nfcorpus
    retriever = NudgeRetriever(
        vectorstore=new_store(ds, lookup), k=K, state_dir="memory", query_adapter="on"
    )
    retriever.fit(split_pairs(ds, "train"))
    result = retriever.tune_result
    tuned = test_ndcg(retriever, ds)
    logger.warning(
        "query_adapter='on', cross-validated: %.4f (%s)", tuned, result.query_adapter_reason
    )
    assert result.query_adapter_scores["chosen_by"] == "cv"
    assert tuned >= 0.465


def test_feedback_log_keeps_the_model_vector(nfcorpus, lookup, tmp_path):
    ds = nfcorpus
    store = new_store(ds, lookup)
    train = split_pairs(ds, "train")[:3000]
    NudgeRetriever(vectorstore=store, state_dir="memory", query_adapter="on").fit(
        train, val_pairs=split_pairs(ds, "dev")
    )
    log = FeedbackLog(tmp_path / "feedback.db")
    retriever = NudgeRetriever(vectorstore=store, k=K, state_dir="memory", feedback=log)
    adapter = retriever.saved_query_adapter()
    assert adapter is not None
    question = ds.test.query_texts[1]
    model_vector = np.asarray(lookup.embed_query(question), dtype=np.float32)
    docs = retriever.invoke(question)
    logged = log.get_query(docs[0].metadata["nudge_query_id"])
    np.testing.assert_allclose(logged.vector, model_vector, rtol=1e-6)
    # The search used the adapted vector.
    adapted = adapter.transform(model_vector).tolist()
    expected = [d.id for d in store.similarity_search_by_vector(adapted, k=K)]
    assert [d.id for d in docs] == expected
    assert expected != [d.id for d in store.similarity_search_by_vector(model_vector, k=K)]


async def test_ainvoke_applies_the_adapter(nfcorpus, lookup):
    ds = nfcorpus
    store = new_store(ds, lookup)
    retriever = NudgeRetriever(vectorstore=store, k=K, state_dir="memory", query_adapter="on")
    retriever.fit(split_pairs(ds, "train")[:3000], val_pairs=split_pairs(ds, "dev"))
    adapter = retriever.saved_query_adapter()
    for question in ds.test.query_texts[:5]:
        got = [d.id for d in await retriever.ainvoke(question)]
        adapted = adapter.transform(np.asarray(lookup.embed_query(question))).tolist()
        assert got == [d.id for d in store.similarity_search_by_vector(adapted, k=K)]
