"""query_adapter through LlamaIndex's NudgeFinetuneEngine on nfcorpus (SimpleVectorStore)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

from llama_helpers import LookupEmbedding, query_vectors, split_pairs  # noqa: E402
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index_nudge import AdaptedQueryEmbedding, NudgeFinetuneEngine

from nudge_rag import evaluate

K = 10


@pytest.fixture(scope="module")
def index_and_data(nfcorpus):
    ds = nfcorpus
    embed = LookupEmbedding(query_vectors(ds))
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    nodes = [
        TextNode(id_=doc_id, text=ds.doc_texts[k], embedding=docs[k].tolist())
        for k, doc_id in enumerate(ds.doc_ids)
    ]
    return ds, embed, nodes


def ranked(index, embed_model, texts):
    retriever = index.as_retriever(similarity_top_k=K, embed_model=embed_model)
    return [[n.node.node_id for n in retriever.retrieve(t)] for t in texts]


def test_finetuned_model_adapts_queries_only_and_as_retriever_uses_it(index_and_data):
    ds, embed, nodes = index_and_data
    index = VectorStoreIndex(nodes, embed_model=embed)
    engine = NudgeFinetuneEngine.from_index(
        index,
        train_pairs=split_pairs(ds, "train"),
        val_pairs=split_pairs(ds, "dev"),
        query_adapter="on",
        state_dir="memory",
    )
    result = engine.finetune()
    adapter = result.query_adapter
    assert adapter is not None and "kept" in result.query_adapter_reason
    model = engine.get_finetuned_model()
    assert isinstance(model, AdaptedQueryEmbedding)
    question, text = ds.test.query_texts[0], ds.test.query_texts[1]
    base = np.asarray(embed.get_query_embedding(question), dtype=np.float32)
    np.testing.assert_allclose(model.get_query_embedding(question), adapter.transform(base))
    assert model.get_text_embedding(text) == embed.get_text_embedding(text)
    assert model.get_text_embedding_batch([text]) == [embed.get_text_embedding(text)]
    # Test nDCG@10 of the adapted queries over the tuned vectors the store holds (exact).
    table = index.vector_store.data.embedding_dict
    stored = np.asarray([table[i] for i in ds.doc_ids], dtype=np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    adapted = adapter.transform(ds.test.query_embeddings)
    top = np.argsort(-(adapted @ stored.T), axis=1, kind="stable")[:, :K]
    tuned = evaluate(top, ds.test.relevance, K)["ndcg@10"]
    assert tuned >= 0.459
    # The engine's retriever ranks as that exact search does (SimpleVectorStore: ~60 ms a
    # query in Python, so 20 questions).
    texts = ds.test.query_texts[:20]
    got = [
        [n.node.node_id for n in engine.as_retriever(similarity_top_k=K).retrieve(t)] for t in texts
    ]
    assert got == [[ds.doc_ids[r] for r in row] for row in top[:20]]
    engine.restore()
    np.testing.assert_allclose(model.get_query_embedding(question), base)
    assert ranked(index, model, texts[:3]) == ranked(index, embed, texts[:3])


def test_as_retriever_needs_the_index(index_and_data):
    ds, embed, nodes = index_and_data
    index = VectorStoreIndex(nodes[:50], embed_model=embed)
    engine = NudgeFinetuneEngine(index.vector_store, embed, state_dir="memory")
    with pytest.raises(ValueError, match="as_retriever needs the VectorStoreIndex"):
        engine.as_retriever()
    with pytest.raises(TypeError, match="base must be a LlamaIndex BaseEmbedding"):
        AdaptedQueryEmbedding(object(), lambda: None)
