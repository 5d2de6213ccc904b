"""Originals of a persisted LlamaIndex index: kept with the index, restorable from a new load.

A user who persists an index (``index.storage_context.persist(dir)``) and later loads it in
another process must be able to restore the original vectors: with ``persist_dir`` the
originals are written to ``<dir>/nudge_state``; without it they stay in memory, which the
engine says at WARNING with the fix.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import logging

import numpy as np
from llama_helpers import LookupEmbedding, stored, toy_nodes, toy_pairs
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index_nudge import NudgeFinetuneEngine

GAMMA = {"gamma": 0.3}


def test_persisted_index_restores_from_a_new_load(toy, tmp_path):
    docs, questions = toy
    embed = LookupEmbedding(questions)
    index = VectorStoreIndex(toy_nodes(docs, questions), embed_model=embed)
    original = stored(index)
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), persist_dir=tmp_path, solver_params=GAMMA
    )
    assert engine.state_dir == tmp_path / "nudge_state"
    moved = engine.finetune().changed_ids
    assert moved
    index.storage_context.persist(persist_dir=str(tmp_path))
    tuned = stored(index)

    # A new load has new store objects: nothing in memory can help it, only the files.
    loaded = load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(tmp_path)), embed_model=embed
    )
    assert stored(loaded) == tuned
    again = NudgeFinetuneEngine(loaded.vector_store, embed, persist_dir=tmp_path)
    assert again.restore() == len(moved)
    for node_id, vector in stored(loaded).items():
        np.testing.assert_allclose(vector, original[node_id], atol=1e-7)


def test_in_memory_originals_say_the_llama_index_fix_without_a_warning(toy_index, caplog):
    index, _ = toy_index
    with caplog.at_level(logging.INFO, logger="nudge_rag"):
        engine = NudgeFinetuneEngine.from_index(index, train_pairs=[("q?", "d0")])
    assert engine.state_dir is None
    assert "kept in memory only" in caplog.text
    assert "pass persist_dir=dir or state_dir=<folder>" in caplog.text
    assert "persist again after finetune()" in caplog.text
    assert "NudgeRetriever" not in caplog.text  # worded for LlamaIndex
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the happy path
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nudge_rag"):
        NudgeFinetuneEngine.from_index(index, train_pairs=[("q?", "d0")], state_dir="memory")
    assert "kept in memory only" not in caplog.text


def test_two_engines_on_one_store_share_its_originals(toy, toy_index):
    docs, questions = toy
    index, embed = toy_index
    original = stored(index)
    first = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions), solver_params=GAMMA, state_dir="memory"
    )
    first.finetune()
    second = NudgeFinetuneEngine(index.vector_store, embed, state_dir="memory")
    assert second.restore() > 0  # the first engine's originals belong to the store
    assert stored(index) == original
