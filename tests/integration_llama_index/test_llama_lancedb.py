"""LlamaIndex's ``LanceDBVectorStore`` through ``NudgeFinetuneEngine``.

nfcorpus: nodes with their stored MiniLM vectors added by ``VectorStoreIndex`` (one
``create_table`` with every row) to a table without an ANN index (flat, exact search; it
ranks by l2, which ranks like cosine on these unit-norm vectors), train pairs with dev pairs
for validation, ``index.as_retriever`` on the test queries: nDCG@10 before / after (within
0.005 of ``NudgeN`` on the arrays) / after restore (within 0.002 of before), originals back
exactly, text and metadata kept, originals next to the table.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")
pytest.importorskip("llama_index.vector_stores.lancedb", reason="pip install 'nudge-rag[lancedb]'")

import logging

import numpy as np
from llama_helpers import LookupEmbedding  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.vector_stores.lancedb import LanceDBVectorStore  # noqa: E402
from llama_index_nudge import NudgeFinetuneEngine  # noqa: E402

from nudge_rag import NudgeN, evaluate  # noqa: E402
from nudge_rag.backends import LanceDBBackend  # noqa: E402

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
    store = LanceDBVectorStore(uri=str(tmp_path / "lance"), table_name="nf")
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        insert_batch_size=len(nodes),
    )
    rows = {i: k for k, i in enumerate(ids)}
    retriever = index.as_retriever(similarity_top_k=K)

    def ndcg() -> float:
        top = np.full((test.n_queries, K), -1, dtype=np.int64)
        for q, text in enumerate(test.query_texts):
            hits = [rows[n.node.node_id] for n in retriever.retrieve(text)]
            top[q, : len(hits)] = hits
        return evaluate(top, test.relevance, k=K)["ndcg@10"]

    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=_pairs(ds, "train"), val_pairs=_pairs(ds, "dev")
    )
    backend = engine.store
    assert isinstance(backend, LanceDBBackend) and backend.distance == "l2"
    before = ndcg()
    engine.finetune()
    assert engine.state_dir == tmp_path / "lance" / "nudge_state" / "nf"
    after = ndcg()
    hit = retriever.retrieve(test.query_texts[0])[0].node
    assert hit.get_content() == ds.doc_texts[rows[hit.node_id]]
    assert hit.metadata["row"] == rows[hit.node_id]
    engine.restore()
    restored = ndcg()
    logger.warning(
        "LlamaIndex LanceDB flat/l2 nDCG@10: before %.4f, after %.4f (arrays %.4f), restored %.4f",
        before,
        after,
        tuned,
        restored,
    )
    assert before == pytest.approx(exact(docs), abs=0.002)
    assert after == pytest.approx(tuned, abs=0.005)
    assert restored == pytest.approx(before, abs=0.002)
    np.testing.assert_array_equal(backend.get_vectors(ids), docs)
    hit = retriever.retrieve(test.query_texts[1])[0].node
    assert hit.get_content() == ds.doc_texts[rows[hit.node_id]]
