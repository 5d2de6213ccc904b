"""Every bad input a user can hand the engine: a clear error or a logged skip, store unchanged."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import logging

import numpy as np
from llama_helpers import LookupEmbedding, stored, toy_nodes, toy_pairs
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index_nudge import Nudge, NudgeFinetuneEngine

from nudge_rag import WriteBackError

GAMMA = {"gamma": 0.3}


def test_unknown_node_ids(toy, toy_index):
    _, questions = toy
    index, _ = toy_index
    before = stored(index)
    pairs = toy_pairs(questions) + [(next(iter(questions)), "ghost")]
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=pairs)
    with pytest.raises(
        ValueError,
        match=r"train_pairs name 1 document id\(s\) that are not in the store 'SimpleVectorStore', e.g. \['ghost'\]",
    ):
        engine.finetune()
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), val_pairs=[("x", "ghost")]
    )
    with pytest.raises(ValueError, match="val_pairs name 1 document id"):
        engine.finetune()
    assert stored(index) == before


def test_nodes_without_stored_embeddings(toy, caplog):
    docs, questions = toy
    nodes = toy_nodes(docs, questions, key="qs")
    index = VectorStoreIndex(nodes, embed_model=LookupEmbedding(questions))
    del index.vector_store.data.embedding_dict["d3"]  # in the docstore, no vector
    before = stored(index)
    with pytest.raises(
        ValueError, match=r"1 node\(s\) that have no stored embedding, e.g. \['d3'\]"
    ):
        NudgeFinetuneEngine.from_index(index, train_pairs=toy_pairs(questions)).finetune()
    # Questions read from metadata: the node is skipped with a warning instead.
    with caplog.at_level(logging.WARNING, logger="llama_index_nudge"):
        engine = NudgeFinetuneEngine.from_index(index, metadata_key="qs")
    assert "have no stored embedding and are skipped" in caplog.text
    assert all(node_id != "d3" for _, node_id in engine.train_pairs)
    assert stored(index) == before


def test_empty_store(toy):
    _, questions = toy
    index = VectorStoreIndex([], embed_model=LookupEmbedding(questions))
    with pytest.raises(ValueError, match="the store is empty"):
        NudgeFinetuneEngine.from_index(index, train_pairs=toy_pairs(questions)).finetune()
    with pytest.raises(ValueError, match="no training questions found"):
        NudgeFinetuneEngine.from_index(index)


def test_no_pairs(toy_index):
    index, _ = toy_index
    with pytest.raises(ValueError, match="train_pairs is empty"):
        NudgeFinetuneEngine.from_index(index, train_pairs=[])
    engine = NudgeFinetuneEngine(index.vector_store, index._embed_model, state_dir="memory")
    with pytest.raises(ValueError, match="no training pairs"):
        engine.finetune()


def test_dimension_mismatch(toy, toy_index):
    _, questions = toy
    index, _ = toy_index
    before = stored(index)
    wide = LookupEmbedding({q: np.ones(16) / 4 for q in questions})
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), embed_model=wide
    )
    with pytest.raises(
        ValueError, match="have 16 dimensions .* but the store holds 8-dimensional vectors"
    ):
        engine.finetune()
    assert stored(index) == before


def test_nudge_m_on_a_cosine_store(toy, toy_index):
    _, questions = toy
    index, _ = toy_index
    before = stored(index)
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=toy_pairs(questions), variant="m")
    with pytest.raises(
        ValueError, match="NUDGE-M .* scored by dot product, but the store scores by cosine"
    ):
        engine.finetune()
    assert stored(index) == before


def test_nudge_n_on_l2_store_with_non_unit_vectors(toy):
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    docs, questions = toy
    collection = chromadb.EphemeralClient().get_or_create_collection("l2-non-unit")
    index = VectorStoreIndex(
        toy_nodes(docs * 3, questions),
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=collection)
        ),
        embed_model=LookupEmbedding(questions),
    )
    before = collection.get(include=["embeddings"])["embeddings"].copy()
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=toy_pairs(questions))
    with pytest.raises(
        ValueError, match="ranks like cosine only when every stored vector is unit-norm"
    ):
        engine.finetune()
    np.testing.assert_array_equal(collection.get(include=["embeddings"])["embeddings"], before)


def test_bad_variant_and_solver_params(toy_index):
    index, _ = toy_index
    with pytest.raises(ValueError, match="variant must be 'n'"):
        NudgeFinetuneEngine.from_index(index, train_pairs=[], variant="x")
    with pytest.raises(TypeError):
        NudgeFinetuneEngine.from_index(index, train_pairs=[], solver_params={"gama": 0.1})


def test_metadata_key_missing_or_malformed(toy, caplog):
    docs, questions = toy
    nodes = toy_nodes(docs, questions, key="qs")
    for node in nodes[:6]:
        node.metadata["qs"] = {"not": "questions"}
    index = VectorStoreIndex(nodes, embed_model=LookupEmbedding(questions))
    with pytest.raises(
        ValueError, match=r"no training questions found in node.metadata\['missing'\]"
    ):
        NudgeFinetuneEngine.from_index(index, metadata_key="missing")
    with caplog.at_level(logging.WARNING, logger="llama_index_nudge"):
        engine = NudgeFinetuneEngine.from_index(index, metadata_key="qs")
    assert (
        "6 node(s) skipped: metadata['qs'] is not a string or list of strings, e.g. node d0"
        in caplog.text
    )
    assert {node_id for _, node_id in engine.train_pairs} == {f"d{k}" for k in range(6, 12)}


def test_duplicate_pairs_are_skipped(toy, toy_index, caplog):
    _, questions = toy
    index, _ = toy_index
    pairs = toy_pairs(questions)
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=pairs + pairs[:3], solver_params=GAMMA
    )
    assert engine.train_pairs == pairs
    with caplog.at_level(logging.WARNING, logger="nudge_rag"):
        engine.finetune()
    assert "train_pairs: skipped 3 duplicate (question, doc_id) pair(s)" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [[("question",)], [(1, "d0")], [("  ", "d0")], ["just a string"]],
)
def test_malformed_pairs(toy_index, bad):
    index, _ = toy_index
    with pytest.raises(
        ValueError,
        match=r"train_pairs(\[0\] must be a \(question, doc_id\) pair|: question 0 must be a non-empty)",
    ):
        NudgeFinetuneEngine.from_index(index, train_pairs=bad)


def test_unsupported_vector_store_and_embed_model(toy_index):
    index, embed = toy_index
    with pytest.raises(TypeError, match="cannot read and write the stored vectors of dict"):
        NudgeFinetuneEngine({}, embed)
    with pytest.raises(TypeError, match="embed_model must be a LlamaIndex BaseEmbedding"):
        NudgeFinetuneEngine(index.vector_store, object())


class _FlakyStore:
    """An EmbeddingStore whose second write fails once."""

    distance = "cosine"

    def __init__(self, ids, vectors):
        self.vectors = dict(zip(ids, vectors, strict=True))
        self.writes = 0

    def list_ids(self):
        return list(self.vectors)

    def get_vectors(self, ids):
        return np.asarray([self.vectors[i] for i in ids], dtype=np.float32)

    def set_vectors(self, ids, vectors):
        self.writes += 1
        if self.writes == 2:
            raise ConnectionError("server went away")
        self.vectors.update(zip(ids, np.asarray(vectors), strict=True))


def test_interrupted_write_back_can_be_resumed_or_restored(toy):
    docs, questions = toy
    store = _FlakyStore([f"d{k}" for k in range(12)], docs)
    engine = NudgeFinetuneEngine(
        store,
        LookupEmbedding(questions),
        toy_pairs(questions),
        solver_params=GAMMA,
        state_dir=None,
        batch_size=4,
    )
    with pytest.raises(WriteBackError, match="call resume"):
        engine.finetune()
    with pytest.raises(WriteBackError, match="pending"):
        engine.finetune()
    assert engine.resume()
    engine.restore()
    np.testing.assert_array_equal(store.get_vectors(store.list_ids()), docs)


def test_remote_store_needs_a_state_dir():
    from types import SimpleNamespace

    from llama_index_nudge.stores import default_state_dir

    from nudge_rag.backends import QdrantBackend

    adapter = QdrantBackend.__new__(QdrantBackend)
    adapter.client = SimpleNamespace(_client=object())
    adapter.collection_name = "remote"
    with pytest.raises(ValueError, match="pass state_dir=<folder>"):
        default_state_dir(adapter)


def test_dataset_mode_errors(toy):
    docs, questions = toy
    texts = {f"d{k}": f"document {k}" for k in range(12)}
    embed = LookupEmbedding({**questions, **{t: docs[k] for k, t in enumerate(texts.values())}})
    with pytest.raises(TypeError, match="train_dataset: expected a dataset with .queries"):
        Nudge(embed, object())
    train = {
        "queries": {"q0": next(iter(questions))},
        "corpus": texts,
        "relevant_docs": {"q0": ["d0"]},
    }
    nudge = Nudge(embed, train)
    with pytest.raises(
        ValueError, match=r"1 new corpus id\(s\) already exist in the corpus, e.g. \['d1'\]"
    ):
        nudge.insert_data_and_finetune(
            {"queries": {}, "corpus": {"d1": "document 1"}, "relevant_docs": {}}
        )
    with pytest.raises(
        ValueError, match=r"relevant_docs names 1 document id\(s\) that are not in corpus"
    ):
        Nudge(embed, {"queries": {"q0": "x"}, "corpus": texts, "relevant_docs": {"q0": ["zz"]}})
