"""The one registry: framework store class -> backend, for both integrations."""

from __future__ import annotations

import numpy as np
import pytest

from nudge_rag import (
    ArrayStore,
    BaseEmbeddingStore,
    EmbeddingStore,
    StoreTuner,
    UnsupportedStoreError,
    backend_for,
)
from nudge_rag.backends import InMemoryVectorStoreBackend, register_backend, supported_stores


def test_subclass_of_a_supported_store_uses_its_backend():
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    class MyStore(InMemoryVectorStore):
        pass

    store = MyStore(DeterministicFakeEmbedding(size=4))
    store.add_texts(["a", "b"], ids=["1", "2"])
    backend = backend_for(store)
    assert isinstance(backend, InMemoryVectorStoreBackend)
    assert backend.list_ids() == ["1", "2"] and backend.count() == 2


def test_unsupported_store_lists_the_supported_ones_and_their_extras():
    with pytest.raises(UnsupportedStoreError) as info:
        backend_for(object(), "langchain")
    text = str(info.value)
    assert "FAISS (pip install 'nudge-rag[faiss]')" in text
    assert "PGVector (pip install 'nudge-rag[postgres]')" in text
    assert "SimpleVectorStore" not in text  # only the framework's own stores
    assert isinstance(info.value, TypeError)
    assert any("LlamaIndex QdrantVectorStore" in s for s in supported_stores())


def test_a_store_with_the_four_essentials_gets_defaults():
    class Minimal:
        distance = "cosine"

        def __init__(self):
            self.inner = ArrayStore(["a", "b"], np.eye(2, dtype=np.float32))

        def list_ids(self):
            return self.inner.list_ids()

        def get_vectors(self, ids):
            return self.inner.get_vectors(ids)

        def set_vectors(self, ids, vectors):
            self.inner.set_vectors(ids, vectors)

    backend = backend_for(Minimal())
    assert isinstance(backend, EmbeddingStore)
    assert backend.count() == 2 and backend.name == "Minimal" and not backend.is_remote
    assert backend.default_state_dir() is None


def test_base_embedding_store_is_a_complete_store():
    class Mine(BaseEmbeddingStore):
        def list_ids(self):
            return ["x"]

        def get_vectors(self, ids):
            return np.ones((len(ids), 3), dtype=np.float32) / np.sqrt(3)

        def set_vectors(self, ids, vectors):
            pass

    store = Mine()
    assert backend_for(store) is store
    assert StoreTuner(store, state_dir="memory").store is store


def test_register_backend_for_a_new_class():
    class Custom:
        pass

    made = ArrayStore(["a"], np.ones((1, 2), dtype=np.float32))
    register_backend(Custom, lambda vs: made, framework="langchain", extra="custom")
    assert backend_for(Custom()) is made
