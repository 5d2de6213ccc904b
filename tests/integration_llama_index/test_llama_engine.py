"""NudgeFinetuneEngine on small indexes: pair sources, re-tuning, insertion, originals."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import uuid

import numpy as np
from llama_helpers import (
    EmbeddingQAFinetuneDataset,
    FixedLLM,
    LookupEmbedding,
    stored,
    toy_nodes,
    toy_pairs,
)
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index_nudge import NudgeFinetuneEngine

from nudge_rag.backends import SimpleVectorStoreBackend

# Toy data: validation would pick gamma=0 (the toy questions are already answered), so a
# fixed step is used wherever the test needs rows to move.
GAMMA = {"gamma": 0.3}


def _top1(index, questions) -> float:
    """Share of toy questions whose own document comes first."""
    retriever = index.as_retriever(similarity_top_k=1)
    hits = [
        retriever.retrieve(text)[0].node.node_id == f"d{j // 2}" for j, text in enumerate(questions)
    ]
    return float(np.mean(hits))


def test_explicit_pairs_tune_and_restore(toy, toy_index):
    docs, questions = toy
    index, _ = toy_index
    original = stored(index)
    before = _top1(index, questions)
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), solver_params={"gamma": 0.5}
    )
    result = engine.finetune()
    assert set(result.changed_ids) == {f"d{k}" for k in range(12)}
    tuned = stored(index)
    norms = np.linalg.norm(np.asarray(list(tuned.values())), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert _top1(index, questions) > before
    assert engine.restore() == 12
    assert stored(index) == original


def test_pairs_from_metadata_list(toy):
    docs, questions = toy
    nodes = toy_nodes(docs, questions, key="qs")
    index = VectorStoreIndex(nodes, embed_model=LookupEmbedding(questions))
    engine = NudgeFinetuneEngine.from_index(index, metadata_key="qs")
    assert sorted(engine.train_pairs) == sorted(toy_pairs(questions))
    assert len(engine.finetune(val_pairs=toy_pairs(questions)[:4]).changed_ids) > 0


def test_pairs_from_an_llm(toy, toy_index):
    docs, questions = toy
    index, embed = toy_index
    embed.add(["Which document is this?"], docs[:1])
    llm = FixedLLM(answer="1. Which document is this?", prompts=[])
    engine = NudgeFinetuneEngine.from_index(
        index, llm=llm, num_questions=1, solver_params={"gamma": 0.1}
    )
    assert len(engine.train_pairs) == 12 and len(llm.prompts) == 12
    assert engine.finetune().changed_ids


def test_pairs_from_a_dataset_and_json(toy, toy_index, tmp_path):
    _, questions = toy
    index, _ = toy_index
    pairs = toy_pairs(questions)
    dataset = EmbeddingQAFinetuneDataset(
        queries={f"q{j}": text for j, (text, _) in enumerate(pairs)},
        corpus={f"d{k}": f"document {k}" for k in range(12)},
        relevant_docs={f"q{j}": [node_id] for j, (_, node_id) in enumerate(pairs)},
    )
    assert sorted(NudgeFinetuneEngine.from_index(index, train_pairs=dataset).train_pairs) == sorted(
        pairs
    )
    dataset.save_json(str(tmp_path / "train.json"))
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=tmp_path / "train.json")
    assert sorted(engine.train_pairs) == sorted(pairs)


def test_second_finetune_starts_from_originals(toy):
    docs, questions = toy
    pairs = toy_pairs(questions)
    params = {"solver_params": {"gamma": 0.3}, "state_dir": None}

    index = VectorStoreIndex(toy_nodes(docs, questions), embed_model=LookupEmbedding(questions))
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=pairs[:12], **params)
    first = engine.finetune()
    assert set(first.changed_ids) == {f"d{k}" for k in range(6)}
    second = engine.finetune(train_pairs=pairs[12:])
    assert set(second.changed_ids) == {f"d{k}" for k in range(12)}

    fresh = VectorStoreIndex(toy_nodes(docs, questions), embed_model=LookupEmbedding(questions))
    NudgeFinetuneEngine.from_index(fresh, train_pairs=pairs, **params).finetune()
    for node_id, vector in stored(fresh).items():
        np.testing.assert_allclose(stored(index)[node_id], vector, atol=1e-6)
    # Fewer pairs again: rows no longer named go back to their originals.
    third = NudgeFinetuneEngine.from_index(index, train_pairs=pairs[:2], **params)
    third.writeback = engine.writeback
    third.finetune()
    np.testing.assert_allclose(stored(index)["d5"], docs[5], atol=1e-6)


def test_nodes_inserted_after_tuning_keep_their_embeddings(toy, toy_index):
    docs, questions = toy
    index, embed = toy_index
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), solver_params={"gamma": 0.3}
    )
    engine.finetune()
    new_vector = -docs[0]
    index.insert_nodes([TextNode(id_="new", text="new document", embedding=new_vector.tolist())])
    assert stored(index)["new"] == pytest.approx(new_vector.tolist())
    embed.add(["find the new one"], new_vector[None])
    assert (
        index.as_retriever(similarity_top_k=1).retrieve("find the new one")[0].node.node_id == "new"
    )
    embed.add(["what is new?"], (new_vector + docs[1])[None])
    # A new fit with a pair for the new node moves it and leaves the others as before.
    before = stored(index)
    result = engine.finetune(train_pairs=[("what is new?", "new")])
    assert "new" in result.changed_ids
    assert stored(index)["new"] != pytest.approx(new_vector.tolist())
    for node_id in (f"d{k}" for k in range(12)):
        np.testing.assert_allclose(stored(index)[node_id], before[node_id], atol=1e-6)


def test_originals_persist_next_to_a_persisted_index(toy, toy_index, tmp_path):
    _, questions = toy
    index, embed = toy_index
    original = stored(index)
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), persist_dir=tmp_path, solver_params=GAMMA
    )
    assert engine.state_dir == tmp_path / "nudge_state"
    engine.finetune()
    assert (tmp_path / "nudge_state" / "originals.npz").exists()
    index.storage_context.persist(persist_dir=str(tmp_path))

    # Another process: load the persisted (tuned) index and put the originals back.
    from llama_index.core import load_index_from_storage

    loaded = load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(tmp_path)), embed_model=embed
    )
    assert stored(loaded) != original
    assert (
        NudgeFinetuneEngine.from_index(
            loaded, train_pairs=toy_pairs(questions), persist_dir=tmp_path
        ).restore()
        == 12
    )
    assert stored(loaded) == original


def test_nudge_m_on_chroma_inner_product(toy, tmp_path):
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    docs, questions = toy
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    collection = client.create_collection("toy", configuration={"hnsw": {"space": "ip"}})
    index = VectorStoreIndex(
        toy_nodes(docs, questions),
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=collection)
        ),
        embed_model=LookupEmbedding(questions),
    )
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), variant="m", solver_params=GAMMA
    )
    assert engine.store.distance == "dot"
    assert engine.state_dir == tmp_path / "db" / "nudge_state" / "toy"
    result = engine.finetune()
    got = collection.get(ids=result.changed_ids, include=["embeddings", "documents"])
    rows = {i: k for k, i in enumerate(got["ids"])}
    order = [rows[i] for i in result.changed_ids]
    np.testing.assert_allclose(
        np.asarray(got["embeddings"])[order], result.solver.changed_embeddings_, atol=1e-6
    )
    assert sorted(got["documents"]) == sorted(f"document {k[1:]}" for k in result.changed_ids)
    engine.restore()
    np.testing.assert_allclose(
        np.asarray(collection.get(ids=["d3"], include=["embeddings"])["embeddings"])[0],
        docs[3],
        atol=1e-6,
    )


def test_nudge_n_on_chroma_l2_with_unit_vectors(toy):
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    docs, questions = toy
    collection = chromadb.EphemeralClient().get_or_create_collection(f"l2-{uuid.uuid4().hex[:8]}")
    index = VectorStoreIndex(
        toy_nodes(docs, questions),
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=collection)
        ),
        embed_model=LookupEmbedding(questions),
    )
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), solver_params=GAMMA
    )
    assert engine.store.distance == "l2" and engine.state_dir is None
    assert engine.finetune().changed_ids
    assert _top1(index, questions) >= 0.5


def _qdrant_index(docs, questions, tmp_path, distance):
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as rest

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = QdrantVectorStore(
        client=client,
        collection_name="toy",
        dense_config=rest.VectorParams(size=docs.shape[1], distance=distance),
    )
    nodes = toy_nodes(docs, questions)
    ids = {n.node_id: str(uuid.uuid5(uuid.NAMESPACE_URL, n.node_id)) for n in nodes}
    for node in nodes:
        node.id_ = ids[node.node_id]
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=LookupEmbedding(questions),
    )
    pairs = [(text, ids[node_id]) for text, node_id in toy_pairs(questions)]
    return index, client, pairs


def test_qdrant_cosine_stores_nudge_n_as_written_and_refuses_m(toy, tmp_path):
    from qdrant_client.http import models as rest

    docs, questions = toy
    index, client, pairs = _qdrant_index(docs, questions, tmp_path, rest.Distance.COSINE)
    with pytest.raises(ValueError, match="NUDGE-M writes non-normalized vectors"):
        NudgeFinetuneEngine.from_index(index, train_pairs=pairs, variant="m").finetune()
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=pairs, solver_params=GAMMA)
    assert engine.store.distance == "cosine"
    assert engine.state_dir == tmp_path / "qdrant" / "nudge_state" / "toy"
    result = engine.finetune()
    np.testing.assert_allclose(
        engine.store.get_vectors(result.changed_ids), result.solver.changed_embeddings_, atol=1e-6
    )
    node = index.as_retriever(similarity_top_k=1).retrieve(pairs[0][0])[0].node
    assert node.get_content().startswith("document")  # payload kept
    engine.restore()
    np.testing.assert_allclose(engine.store.get_vectors([pairs[0][1]])[0], docs[0], atol=1e-6)
    client.close()


def test_qdrant_dot_with_nudge_m(toy, tmp_path):
    from qdrant_client.http import models as rest

    docs, questions = toy
    index, client, pairs = _qdrant_index(docs, questions, tmp_path, rest.Distance.DOT)
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=pairs, variant="m", state_dir=tmp_path / "state", solver_params=GAMMA
    )
    result = engine.finetune()
    np.testing.assert_allclose(
        engine.store.get_vectors(result.changed_ids), result.solver.changed_embeddings_, atol=1e-6
    )
    assert (tmp_path / "state" / "originals.npz").exists()
    client.close()


def test_adapter_round_trip_and_order(toy_index):
    index, _ = toy_index
    adapter = SimpleVectorStoreBackend(index.vector_store)
    ids = adapter.list_ids()[::-1]
    vectors = adapter.get_vectors(ids)
    adapter.set_vectors(ids[:2], vectors[:2] * 2)
    adapter.set_vectors(ids[:2], vectors[:2] * 2)  # idempotent
    np.testing.assert_allclose(adapter.get_vectors(ids[:2]), vectors[:2] * 2)
    with pytest.raises(KeyError, match="'nope'"):
        adapter.get_vectors(["nope"])


def test_query_embedding_modes_agree_for_a_symmetric_model(toy):
    docs, questions = toy
    results = []
    for mode in ("query", "text"):
        index = VectorStoreIndex(toy_nodes(docs, questions), embed_model=LookupEmbedding(questions))
        engine = NudgeFinetuneEngine.from_index(
            index, train_pairs=toy_pairs(questions), solver_params=GAMMA, query_embedding=mode
        )
        engine.finetune()
        results.append(stored(index))
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="query_embedding must be 'query' or 'text'"):
        NudgeFinetuneEngine.from_index(index, train_pairs=[], query_embedding="both")
