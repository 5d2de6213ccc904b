"""The same engine against a Chroma server (``chroma run``) through ``chromadb.HttpClient``."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import numpy as np
from llama_helpers import LookupEmbedding, toy_nodes, toy_pairs
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index_nudge import NudgeFinetuneEngine


def test_chroma_http_server(chroma_server, toy, tmp_path):
    from llama_index.vector_stores.chroma import ChromaVectorStore

    docs, questions = toy
    client = chroma_server.client()
    collection = client.create_collection("toy-http", metadata={"hnsw:space": "cosine"})
    index = VectorStoreIndex(
        toy_nodes(docs, questions),
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=collection)
        ),
        embed_model=LookupEmbedding(questions),
    )
    pairs = toy_pairs(questions)
    # A server keeps the vectors beyond this process: the originals need a folder.
    with pytest.raises(ValueError, match="on a server: pass state_dir=<folder>"):
        NudgeFinetuneEngine.from_index(index, train_pairs=pairs)

    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=pairs, solver_params={"gamma": 0.3}, state_dir=tmp_path / "state"
    )
    assert engine.store.distance == "cosine"
    result = engine.finetune()
    assert len(result.changed_ids) == 12
    assert (tmp_path / "state" / "originals.npz").exists()
    np.testing.assert_allclose(
        engine.store.get_vectors(result.changed_ids), result.solver.changed_embeddings_, atol=1e-6
    )
    hit = index.as_retriever(similarity_top_k=1).retrieve(pairs[4][0])[0]
    assert hit.node.node_id == "d2" and hit.node.get_content() == "document 2"

    # A new engine (another process) restores from the saved state.
    again = NudgeFinetuneEngine.from_index(index, train_pairs=pairs, state_dir=tmp_path / "state")
    assert again.restore() == 12
    np.testing.assert_allclose(
        engine.store.get_vectors([f"d{k}" for k in range(12)]), docs, atol=1e-6
    )
