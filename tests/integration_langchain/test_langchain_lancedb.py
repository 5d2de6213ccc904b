"""LangChain's ``LanceDB`` (langchain-community) through ``NudgeRetriever``.

A table without an index ranks by l2 whatever ``distance=`` says (that only changes the
relevance scores), so the backend reports ``"l2"``: NUDGE-M is refused, NUDGE-N is accepted
on unit-norm vectors. nfcorpus: the stored MiniLM vectors bulk-loaded with
``create_table`` (flat, exact search), train pairs with dev pairs for validation, the
retriever on the test queries: nDCG@10 before / after (within 0.005 of ``NudgeN`` on the
arrays) / after restore (within 0.002 of before), originals back exactly, text and metadata
kept, originals next to the table.
"""

from __future__ import annotations

import pytest

pytest.importorskip("lancedb", reason="pip install 'nudge-rag[lancedb]'")
pytest.importorskip("pyarrow", reason="pip install 'nudge-rag[lancedb]'")
pytest.importorskip("langchain_community", reason="pip install 'nudge-rag[faiss]' (or [lancedb])")
pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import logging

import lancedb  # noqa: E402
import numpy as np
import pyarrow as pa  # noqa: E402
from langchain_community.vectorstores import LanceDB  # noqa: E402
from langchain_helpers import (  # noqa: E402
    LookupEmbeddings,
    exact_ndcg,
    query_vectors,
    ranked_ndcg,
    split_pairs,
)
from langchain_nudge import NudgeRetriever  # noqa: E402

from nudge_rag import MetricMismatchError, NudgeN, backend_for  # noqa: E402
from nudge_rag.backends import LanceDBBackend  # noqa: E402

logger = logging.getLogger(__name__)
K = 10


def _ndcg(retriever: NudgeRetriever, ds) -> float:
    ranked = []
    for docs in retriever.batch(list(ds.test.query_texts), k=K):
        # LangChain's LanceDB drops the id column; the retriever sets Document.id from it
        assert all(d.id == d.metadata["doc_id"] for d in docs)
        ranked.append([d.id for d in docs])
    return ranked_ndcg(ds, ranked, K)


@pytest.mark.slow  # end to end on nfcorpus: 15-36 s
def test_nfcorpus_end_to_end(nfcorpus, tmp_path):
    ds = nfcorpus
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    table = query_vectors(ds)
    tuned = exact_ndcg(
        ds, NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset()).embeddings_, K
    )
    ids = list(ds.doc_ids)
    data = pa.table(
        {
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(docs.ravel()), docs.shape[1]),
            "id": ids,
            "text": list(ds.doc_texts),
            "metadata": [{"doc_id": i, "row": k} for k, i in enumerate(ids)],
        }
    )
    connection = lancedb.connect(tmp_path / "lance")
    connection.create_table("nf", data=data)
    store = LanceDB(
        connection=connection, embedding=LookupEmbeddings(table), table_name="nf", distance="cosine"
    )
    backend = backend_for(store)
    assert isinstance(backend, LanceDBBackend)
    assert backend.distance == "l2"  # distance="cosine" does not change the ranking
    with pytest.raises(MetricMismatchError, match="dot product"):
        NudgeRetriever(vectorstore=store, variant="m").fit(split_pairs(ds, "train")[:20])
    retriever = NudgeRetriever(vectorstore=store, k=K)
    before = _ndcg(retriever, ds)
    retriever.fit(split_pairs(ds, "train"), val_pairs=split_pairs(ds, "dev"))
    assert retriever.writeback.state_dir == tmp_path / "lance" / "nudge_state" / "nf"
    after = _ndcg(retriever, ds)
    retriever.restore()
    restored = _ndcg(retriever, ds)
    logger.warning(
        "LangChain LanceDB flat/l2 nDCG@10: before %.4f, after %.4f (arrays %.4f), restored %.4f",
        before,
        after,
        tuned,
        restored,
    )
    assert before == pytest.approx(exact_ndcg(ds, docs, K), abs=0.002)
    assert after == pytest.approx(tuned, abs=0.005)
    assert restored == pytest.approx(before, abs=0.002)
    np.testing.assert_array_equal(backend.get_vectors(ids), docs)
    rows = store.get_table().search().where(f"id IN ('{ids[0]}', '{ids[1]}')")
    got = {r["id"]: (r["text"], r["metadata"]["row"]) for r in rows.limit(None).to_list()}
    assert got == {ids[0]: (ds.doc_texts[0], 0), ids[1]: (ds.doc_texts[1], 1)}
