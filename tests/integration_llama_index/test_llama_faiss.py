"""LlamaIndex's ``FaissVectorStore`` and ``FaissMapVectorStore`` through ``NudgeFinetuneEngine``.

``FaissVectorStore`` knows positions only (its ids are ``"0"``, ``"1"``, ...); the index's
``nodes_dict`` maps them to node ids, so the engine gets ``for_index(index)``. The map store
knows node ids, so the registry's backend serves ``from_index`` directly. Toy: finetune,
``persist`` / load in new objects / ``restore`` with text and metadata kept, NUDGE-M refused
on L2, write-through to the persist folder. nfcorpus end to end: ``test_llama_nfcorpus.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("faiss", reason="pip install 'nudge-rag[faiss]'")
pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")
pytest.importorskip("llama_index.vector_stores.faiss", reason="pip install 'nudge-rag[faiss]'")

import faiss  # noqa: E402
import numpy as np
from llama_helpers import LookupEmbedding, toy_nodes, toy_pairs  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage  # noqa: E402
from llama_index.vector_stores.faiss import FaissMapVectorStore, FaissVectorStore  # noqa: E402
from llama_index_nudge import NudgeFinetuneEngine  # noqa: E402

from nudge_rag import MetricMismatchError, backend_for  # noqa: E402
from nudge_rag.backends import FaissBackend  # noqa: E402
from nudge_rag.backends.faiss import for_index, from_llama_index_map  # noqa: E402

GAMMA = 0.3


def _index(toy, store_cls=FaissVectorStore, faiss_index=None):
    docs, questions = toy
    faiss_index = faiss.IndexFlatIP(docs.shape[1]) if faiss_index is None else faiss_index
    if store_cls is FaissMapVectorStore:
        faiss_index = faiss.IndexIDMap2(faiss_index)
    store = store_cls(faiss_index=faiss_index)
    embed = LookupEmbedding(questions)
    nodes = toy_nodes(docs, questions, key="questions")
    for k, node in enumerate(nodes):
        node.metadata["i"] = k
    index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    return index, embed


def _load(folder, embed, store_cls=FaissVectorStore):
    store = store_cls.from_persist_dir(str(folder))
    context = StorageContext.from_defaults(vector_store=store, persist_dir=str(folder))
    return load_index_from_storage(context, embed_model=embed)


def _vectors(index) -> np.ndarray:
    client = index.vector_store.client
    inner = faiss.downcast_index(client.index) if hasattr(client, "id_map") else client
    return inner.reconstruct_n(0, inner.ntotal)


def _check_nodes(index, n: int) -> None:
    nodes = index.docstore.get_nodes([f"d{k}" for k in range(n)])
    assert [node.text for node in nodes] == [f"document {k}" for k in range(n)]
    assert [node.metadata["i"] for node in nodes] == list(range(n))


def test_plain_store_ids_are_positions_and_for_index_gives_node_ids(toy):
    index, _ = _index(toy)
    positions = backend_for(index.vector_store)
    assert isinstance(positions, FaissBackend) and positions.distance == "dot"
    assert positions.list_ids()[:3] == ["0", "1", "2"]  # what FaissVectorStore.query returns
    by_node = for_index(index)
    assert by_node.list_ids() == [f"d{k}" for k in range(12)]
    np.testing.assert_array_equal(by_node.get_vectors(["d3"]), toy[0][3:4])


def test_finetune_persist_load_restore(toy, tmp_path):
    docs, questions = toy
    index, embed = _index(toy)
    folder = tmp_path / "storage"
    index.storage_context.persist(str(folder))
    engine = NudgeFinetuneEngine(
        for_index(index),
        embed,
        toy_pairs(questions)[:12],  # nodes d0..d5
        persist_dir=folder,
        solver_params={"gamma": GAMMA},
    )
    assert engine.state_dir == folder / "nudge_state"
    result = engine.finetune()
    assert sorted(result.changed_ids) == [f"d{k}" for k in range(6)]
    tuned = _vectors(index)
    assert not np.array_equal(tuned[:6], docs[:6])
    np.testing.assert_array_equal(tuned[6:], docs[6:])
    hits = index.as_retriever(similarity_top_k=1).retrieve(next(iter(questions)))
    assert hits[0].node.node_id == "d0"
    _check_nodes(index, 12)
    index.storage_context.persist(str(folder))  # the user's persist after finetune

    loaded = _load(folder, embed)
    np.testing.assert_array_equal(_vectors(loaded), tuned)
    again = NudgeFinetuneEngine(for_index(loaded), embed, persist_dir=folder)
    assert again.restore() == 6
    np.testing.assert_array_equal(_vectors(loaded), docs)
    _check_nodes(loaded, 12)


def test_nudge_m_on_l2_is_refused(toy, tmp_path):
    docs, questions = toy
    index, embed = _index(toy, faiss_index=faiss.IndexFlatL2(docs.shape[1]))
    engine = NudgeFinetuneEngine(
        for_index(index), embed, toy_pairs(questions), variant="m", state_dir=tmp_path
    )
    with pytest.raises(MetricMismatchError, match="NUDGE-M.*l2"):
        engine.finetune()
    np.testing.assert_array_equal(_vectors(index), docs)


def test_map_store_from_index_and_write_through(toy, tmp_path):
    docs, questions = toy
    index, embed = _index(toy, FaissMapVectorStore)
    assert backend_for(index.vector_store).list_ids() == [f"d{k}" for k in range(12)]
    folder = tmp_path / "storage"
    index.storage_context.persist(str(folder))
    engine = NudgeFinetuneEngine(
        from_llama_index_map(index.vector_store, folder=folder),
        embed,
        toy_pairs(questions)[:12],
        solver_params={"gamma": GAMMA},
        batch_size=4,
    )
    assert engine.state_dir == folder / "nudge_state"
    engine.finetune()
    tuned = _vectors(index)
    # No persist: the folder's index file already holds the tuned vectors.
    loaded = _load(folder, embed, FaissMapVectorStore)
    np.testing.assert_array_equal(_vectors(loaded), tuned)
    _check_nodes(loaded, 12)
    assert engine.restore() == 6
    np.testing.assert_array_equal(_vectors(_load(folder, embed, FaissMapVectorStore)), docs)
    # The registry's backend serves from_index directly (node ids), metadata questions.
    engine = NudgeFinetuneEngine.from_index(
        loaded, metadata_key="questions", state_dir="memory", solver_params={"gamma": GAMMA}
    )
    result = engine.finetune()
    assert result.n_train_queries == 24 and len(result.changed_ids) >= 8


def test_from_index_tunes_a_plain_faiss_store_by_node_id(toy):
    """``from_index`` maps positions to node ids itself: pairs name nodes, as users write them."""
    _, questions = toy
    index, _ = _index(toy)
    before = _vectors(index).copy()
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), solver_params={"gamma": 0.3}, state_dir="memory"
    )
    assert engine.store.list_ids()[:2] == ["d0", "d1"]
    moved = engine.finetune().changed_ids
    assert moved and all(i.startswith("d") for i in moved)
    assert not np.allclose(_vectors(index), before)
    engine.restore()
    np.testing.assert_allclose(_vectors(index), before, atol=1e-7)
    _check_nodes(index, 12)
