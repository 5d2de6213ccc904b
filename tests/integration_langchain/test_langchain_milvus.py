"""LangChain's ``Milvus`` (langchain-milvus) in Milvus Lite through ``NudgeRetriever``.

Toy store: the registry's backend, the metric read from the index (COSINE, and LangChain's
default AUTOINDEX L2), NUDGE-M refused on COSINE before anything is written, fit / restore
with text and metadata kept and the originals next to the ``.db`` file. nfcorpus end to end:
``test_langchain_nfcorpus.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")
pytest.importorskip("langchain_milvus", reason="pip install 'nudge-rag[milvus]'")


import numpy as np

pytest.importorskip("milvus_lite", reason="pip install 'nudge-rag[milvus]'")

from langchain_helpers import (  # noqa: E402
    LookupEmbeddings,
    toy_vectors,
)
from langchain_milvus import Milvus  # noqa: E402
from langchain_nudge import NudgeRetriever  # noqa: E402

from nudge_rag import MetricMismatchError, backend_for  # noqa: E402
from nudge_rag.backends import MilvusBackend  # noqa: E402

N_DOCS = 12
TEXTS = [f"document {k} is about topic {k}" for k in range(N_DOCS)]
IDS = [f"doc-{k}" for k in range(N_DOCS)]
QUESTIONS = [f"what is document {k} about, take {j}?" for k in range(N_DOCS) for j in range(2)]
K = 10
FLAT_COSINE = {"metric_type": "COSINE", "index_type": "FLAT", "params": {}}


@pytest.fixture(scope="module")
def toy():
    docs = toy_vectors(TEXTS, dim=8, seed=0)
    rng = np.random.default_rng(1)
    table = dict(docs)
    for k, text in enumerate(TEXTS):
        for j in range(2):
            q = docs[text] + 0.5 * rng.standard_normal(8)
            table[QUESTIONS[2 * k + j]] = q / np.linalg.norm(q)
    return table


def _milvus(path, embeddings, texts, vectors, ids, metadatas, index_params=FLAT_COSINE, name="c"):
    store = Milvus(
        embeddings,
        collection_name=name,
        connection_args={"uri": str(path), "db_name": "default"},  # milvus-lite 3.2.2
        index_params=index_params,
    )
    store.add_embeddings(texts, np.asarray(vectors).tolist(), metadatas, ids=ids, batch_size=2000)
    return store


def _toy_store(toy, path, **kwargs):
    vectors = [toy[t] for t in TEXTS]
    metadatas = [{"year": 2000 + k, "topic": f"t{k}"} for k in range(N_DOCS)]
    return _milvus(path, LookupEmbeddings(toy), TEXTS, vectors, IDS, metadatas, **kwargs)


def _rows(store: Milvus) -> dict[str, tuple]:
    rows = store.client.query(store.collection_name, ids=IDS, output_fields=["*"])
    return {r["pk"]: (r["text"], r["year"], r["topic"]) for r in rows}


def _pairs(n: int = 8) -> list[tuple[str, str]]:
    return [(QUESTIONS[2 * k + j], IDS[k]) for k in range(n) for j in range(2)]


def test_registry_metric_and_refusal(toy, tmp_path):
    store = _toy_store(toy, tmp_path / "a.db")
    backend = backend_for(store)
    assert isinstance(backend, MilvusBackend) and backend.distance == "cosine"
    assert backend.default_state_dir() == tmp_path.resolve() / "nudge_state" / "c"
    before = backend.get_vectors(IDS)
    retriever = NudgeRetriever(vectorstore=store, k=3, variant="m")
    with pytest.raises(MetricMismatchError, match="dot product"):
        retriever.fit(_pairs())
    np.testing.assert_array_equal(backend.get_vectors(IDS), before)  # nothing written
    default = _toy_store(toy, tmp_path / "b.db", index_params=None)
    assert backend_for(default).distance == "l2"  # LangChain's default AUTOINDEX is L2


def test_fit_restore_keeps_text_and_metadata(toy, tmp_path):
    store = _toy_store(toy, tmp_path / "a.db")
    rows = _rows(store)
    backend = backend_for(store)
    original = backend.get_vectors(IDS)
    retriever = NudgeRetriever(vectorstore=store, k=3, solver_params={"gamma": 0.3})
    result = retriever.fit(_pairs()).tune_result
    assert result.changed_ids and set(result.changed_ids) <= set(IDS[:8])
    assert retriever.writeback.state_dir == tmp_path.resolve() / "nudge_state" / "c"
    assert (retriever.writeback.state_dir / "originals.npz").is_file()
    moved = backend.get_vectors(result.changed_ids)
    assert not np.allclose(moved, original[[IDS.index(i) for i in result.changed_ids]])
    assert _rows(store) == rows
    docs = retriever.invoke(QUESTIONS[0], k=2)
    assert docs[0].page_content in TEXTS and docs[0].metadata["year"] >= 2000
    # A new process: a new store object over the same file restores from the saved originals.
    again = Milvus(
        LookupEmbeddings(toy),
        collection_name="c",
        connection_args={"uri": str(tmp_path / "a.db"), "db_name": "default"},
    )
    assert NudgeRetriever(vectorstore=again).restore() == len(result.changed_ids)
    np.testing.assert_array_equal(backend.get_vectors(IDS), original)
    assert _rows(store) == rows
