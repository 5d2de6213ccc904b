"""LlamaIndex's ``MilvusVectorStore`` in Milvus Lite through ``NudgeFinetuneEngine``.

nfcorpus: nodes with their stored MiniLM vectors inserted by ``VectorStoreIndex`` (the
store's batched insert) into an exact ``FLAT`` COSINE collection, train pairs with dev pairs
for validation, ``index.as_retriever`` on the test queries for the tuned ranking (Milvus Lite
answers a search in ~0.1 s here, so the untuned and restored rankings are computed exactly
from the vectors read back): nDCG@10 after within 0.005 of ``NudgeN`` on the arrays, restore
within 0.002 of before, originals back to float32 rounding, text and metadata kept, originals
next to the ``.db`` file.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")
pytest.importorskip("llama_index.vector_stores.milvus", reason="pip install 'nudge-rag[milvus]'")

import logging

import numpy as np

pytest.importorskip("milvus_lite", reason="pip install 'nudge-rag[milvus]'")

from llama_helpers import LookupEmbedding  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.vector_stores.milvus import MilvusVectorStore  # noqa: E402
from llama_index_nudge import NudgeFinetuneEngine  # noqa: E402

from nudge_rag import NudgeN, evaluate  # noqa: E402
from nudge_rag.backends import MilvusBackend  # noqa: E402

logger = logging.getLogger(__name__)
K = 10


def _pairs(ds, name: str) -> list[tuple[str, str]]:
    split = ds.split(name)
    rel = split.relevance
    return [
        (split.query_texts[q], ds.doc_ids[int(row)])
        for q in range(split.n_queries)
        for row in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]
    ]


@pytest.mark.slow  # end to end on nfcorpus: 15-36 s
def test_nfcorpus_end_to_end(nfcorpus, tmp_path):
    ds = nfcorpus
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    embed = LookupEmbedding()
    for split in ds.splits.values():
        embed.add(split.query_texts, split.query_embeddings)
    test = ds.test

    def exact(doc_vectors: np.ndarray) -> float:
        top = np.argsort(-(test.query_embeddings @ doc_vectors.T), axis=1, kind="stable")[:, :K]
        return evaluate(top, test.relevance, k=K)["ndcg@10"]

    tuned = exact(NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset()).embeddings_)
    ids = list(ds.doc_ids)
    nodes = [
        TextNode(id_=i, text=ds.doc_texts[k], embedding=docs[k].tolist(), metadata={"row": k})
        for k, i in enumerate(ids)
    ]
    store = MilvusVectorStore(
        uri=str(tmp_path / "nf.db"),
        collection_name="nf",
        dim=docs.shape[1],
        similarity_metric="COSINE",
        index_config={"index_type": "FLAT"},
        use_async_client=False,
        db_name="default",  # milvus-lite 3.2.2
        batch_size=2000,
    )
    index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=_pairs(ds, "train"), val_pairs=_pairs(ds, "dev")
    )
    backend = engine.store
    assert isinstance(backend, MilvusBackend) and backend.distance == "cosine"
    before = exact(backend.get_vectors(ids))
    engine.finetune()
    assert engine.state_dir == tmp_path.resolve() / "nudge_state" / "nf"
    rows = {i: k for k, i in enumerate(ids)}
    retriever = index.as_retriever(similarity_top_k=K)
    top = np.full((test.n_queries, K), -1, dtype=np.int64)
    for q, text in enumerate(test.query_texts):
        hits = [rows[n.node.node_id] for n in retriever.retrieve(text)]
        top[q, : len(hits)] = hits
    after = evaluate(top, test.relevance, k=K)["ndcg@10"]
    hit = retriever.retrieve(test.query_texts[0])[0].node
    assert hit.get_content() == ds.doc_texts[rows[hit.node_id]]
    assert hit.metadata["row"] == rows[hit.node_id]
    engine.restore()
    restored = exact(backend.get_vectors(ids))
    logger.warning(
        "LlamaIndex Milvus Lite FLAT/COSINE nDCG@10: before %.4f, after %.4f (arrays %.4f), "
        "restored %.4f",
        before,
        after,
        tuned,
        restored,
    )
    assert before == pytest.approx(exact(docs), abs=0.002)
    assert after == pytest.approx(tuned, abs=0.005)
    assert restored == pytest.approx(before, abs=0.002)
    np.testing.assert_allclose(backend.get_vectors(ids), docs, rtol=0, atol=1e-7)
    got = store.client.query("nf", ids=ids[:2], output_fields=["text", "row"])
    assert {r["id"]: (r["text"], r["row"]) for r in got} == {
        ids[0]: (ds.doc_texts[0], 0),
        ids[1]: (ds.doc_texts[1], 1),
    }
