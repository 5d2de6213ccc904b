"""Fixtures for the LlamaIndex integration tests (helpers live in ``llama_helpers``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# The helpers module is imported by name, under either pytest import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

# Without the llama-index extra every test module here skips (pytest.importorskip at its top)
# and these fixtures are never used: import the helpers only when the framework is there.
if importlib.util.find_spec("llama_index") is not None:
    from llama_helpers import NFCORPUS, LookupEmbedding, toy_nodes, unit_rows  # noqa: E402


@pytest.fixture(scope="session")
def nfcorpus():
    """The nfcorpus nudge_split with precomputed MiniLM embeddings (skips when absent)."""
    if not (NFCORPUS / "nudge_split").is_dir():
        pytest.skip(f"nfcorpus data not found at {NFCORPUS} (set NUDGE_RAG_DATA)")
    from nudge_rag._data import load_embedded

    return load_embedded(NFCORPUS, mmap=False)


@pytest.fixture
def toy():
    """12 unit-norm documents in 8 dims and 2 questions per document, near their document."""
    rng = np.random.default_rng(0)
    docs = unit_rows(rng, 12, 8)
    questions = {}
    for k in range(12):
        for j in range(2):
            q = docs[k] + 0.9 * unit_rows(rng, 1, 8)[0]
            questions[f"what does document {k} say, part {j}?"] = q / np.linalg.norm(q)
    return docs, questions


@pytest.fixture
def toy_index(toy):
    """A SimpleVectorStore index over the toy documents, and its lookup embed model."""
    from llama_index.core import VectorStoreIndex

    docs, questions = toy
    embed = LookupEmbedding(questions)
    index = VectorStoreIndex(toy_nodes(docs, questions), embed_model=embed)
    return index, embed
