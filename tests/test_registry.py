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
from nudge_rag._errors import MetricUnknownError, StoreURIError
from nudge_rag.backends import InMemoryVectorStoreBackend, register_backend, supported_stores


def test_subclass_of_a_supported_store_uses_its_backend():
    pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    class MyStore(InMemoryVectorStore):
        """A user's subclass, registered nowhere."""

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
    """Three methods make a store: the tuner reads through it, writes, and restores."""
    ids = ["x", "y", "z"]
    original = np.eye(3, dtype=np.float32)

    class Mine(BaseEmbeddingStore):
        def __init__(self):
            self.rows = dict(zip(ids, original.copy(), strict=True))

        def list_ids(self):
            return list(self.rows)

        def get_vectors(self, ids):
            return np.stack([self.rows[i] for i in ids])

        def set_vectors(self, ids, vectors):
            self.rows.update(zip(ids, np.asarray(vectors, dtype=np.float32), strict=True))

    store = Mine()
    assert backend_for(store) is store
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
    assert tuner.store is store and store.distance == "cosine"
    query = np.array([[1.0, 1.0, 0.0]], dtype=np.float32) / np.sqrt(2)
    assert tuner.tune_embedded(query, [["x"]]).changed_ids == ["x"]
    assert store.rows["x"] @ query[0] > original[0] @ query[0]  # moved toward its question
    np.testing.assert_array_equal(store.get_vectors(["y", "z"]), original[1:])
    assert tuner.restore() == 1
    np.testing.assert_array_equal(store.get_vectors(ids), original)


def test_register_backend_for_a_new_class():
    class Custom:
        """A vector store class no integration knows."""

    made = ArrayStore(["a"], np.ones((1, 2), dtype=np.float32))
    register_backend(Custom, lambda vs: made, framework="langchain", extra="custom")
    assert backend_for(Custom()) is made


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ValueError("no table 't'\nmore"), r"^--store duckdb:x: no table 't'$"),
        (MetricUnknownError("how it ranks is not known"), r"pass --distance cosine, dot or l2"),
        (StoreURIError("--store duckdb:x: already named"), r"^--store duckdb:x: already named$"),
    ],
)
def test_an_opener_that_fails_closes_its_client_and_names_the_flag(error, message):
    from nudge_rag.backends._uri import closing_on_error

    closed = []
    with pytest.raises(StoreURIError, match=message):
        with closing_on_error(lambda: closed.append(True), "duckdb:x"):
            raise error
    assert closed == [True]
    with pytest.raises(KeyboardInterrupt), closing_on_error(lambda: closed.append(True), "u"):
        raise KeyboardInterrupt
    assert closed == [True, True]
    with closing_on_error(lambda: closed.append(True), "u"):
        handed_over = "backend"  # the set-up succeeded: the caller now owns the client
    assert handed_over == "backend" and closed == [True, True]  # not closed
