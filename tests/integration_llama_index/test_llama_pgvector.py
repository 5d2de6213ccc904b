"""LlamaIndex's ``PGVectorStore`` on a real PostgreSQL + pgvector server (the session's ``pg_url``).

Toy store: the registry's backend (ids in ``node_id``, cosine: LlamaIndex always ranks by
cosine distance), ``finetune`` and ``restore`` from a new engine (another process) with text and
metadata kept and the originals in side tables of the same database (no folder), NUDGE-M
refused on cosine before anything is written. nfcorpus end to end: ``test_llama_nfcorpus.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")
pytest.importorskip(
    "llama_index.vector_stores.postgres", reason="pip install 'nudge-rag[postgres]'"
)

import uuid

import numpy as np

pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")

from llama_helpers import LookupEmbedding, toy_nodes, toy_pairs  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.vector_stores.postgres import PGVectorStore  # noqa: E402
from llama_index_nudge import NudgeFinetuneEngine  # noqa: E402

from nudge_rag import MetricMismatchError, backend_for  # noqa: E402
from nudge_rag.backends import PgVectorBackend  # noqa: E402


def _store(pg_url: str, dim: int, table_name: str | None = None) -> PGVectorStore:
    """The ``data_<table_name>`` table (new, uniquely named by default); no ``hnsw_kwargs``:
    exact search."""
    url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return PGVectorStore.from_params(
        connection_string=url,
        async_connection_string=url,
        table_name=table_name or f"nudge_{uuid.uuid4().hex[:8]}",
        embed_dim=dim,
        use_jsonb=True,
    )


def _index(pg_url: str, nodes, embed, dim: int) -> VectorStoreIndex:
    store = _store(pg_url, dim)
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex(nodes, storage_context=context, embed_model=embed)


def _rows(index, ids: list[str]) -> dict[str, tuple]:
    """``node_id -> (text, metadata)`` as the store returns the nodes."""
    return {n.node_id: (n.get_content(), n.metadata) for n in index.vector_store.get_nodes(ids)}


def _originals(pg_url: str, backend: PgVectorBackend) -> int:
    """Originals saved for ``backend``'s table in the database's ``nudge_originals``."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        query = "SELECT count(*) FROM nudge_originals WHERE target = %s"
        return conn.execute(query, (backend.target,)).fetchone()[0]


# ---------------------------------------------------------------------- toy store
@pytest.fixture
def toy_pg(toy, pg_url):
    docs, questions = toy
    nodes = toy_nodes(docs, questions)
    for k, node in enumerate(nodes):
        node.metadata.update({"i": k, "tag": f"t{k}"})
    index = _index(pg_url, nodes, LookupEmbedding(questions), docs.shape[1])
    return index, [n.node_id for n in nodes]


def test_finetune_restore_keeps_text_and_metadata(toy, toy_pg, pg_url):
    docs, questions = toy
    index, ids = toy_pg
    backend = backend_for(index.vector_store)
    assert isinstance(backend, PgVectorBackend) and backend.distance == "cosine"
    assert sorted(backend.list_ids()) == sorted(ids)
    np.testing.assert_array_equal(backend.get_vectors(ids), docs)
    rows = _rows(index, ids)
    assert rows == {f"d{k}": (f"document {k}", {"i": k, "tag": f"t{k}"}) for k in range(12)}
    engine = NudgeFinetuneEngine.from_index(
        index, train_pairs=toy_pairs(questions)[:16], solver_params={"gamma": 0.3}
    )
    assert engine.state_dir is None  # originals in the database, no folder
    moved = engine.finetune().changed_ids
    assert moved and set(moved) <= {f"d{k}" for k in range(8)}
    tuned = backend.get_vectors(ids)
    changed = ~np.all(tuned == docs, axis=1)
    assert sorted(np.asarray(ids)[changed].tolist()) == sorted(moved)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert _rows(index, ids) == rows
    assert _originals(pg_url, backend) == len(moved)  # saved in the database
    hit = index.as_retriever(similarity_top_k=2).retrieve(next(iter(questions)))[0].node
    assert rows[hit.node_id] == (hit.get_content(), hit.metadata)

    # A new engine over a new store object (as another process would be) restores.
    other = _store(pg_url, docs.shape[1], index.vector_store.table_name)
    again = NudgeFinetuneEngine(other, LookupEmbedding(questions))
    assert again.restore() == len(moved)
    np.testing.assert_array_equal(backend.get_vectors(ids), docs)
    assert _rows(index, ids) == rows
    assert _originals(pg_url, backend) == 0
    backend.close()


def test_nudge_m_on_cosine_is_refused_before_writing(toy, toy_pg):
    docs, questions = toy
    index, ids = toy_pg
    engine = NudgeFinetuneEngine.from_index(index, train_pairs=toy_pairs(questions), variant="m")
    with pytest.raises(MetricMismatchError, match="NUDGE-M"):
        engine.finetune()
    np.testing.assert_array_equal(engine.store.get_vectors(ids), docs)
    status = engine.status()
    assert not status.tuned and status.n_originals == 0 and status.pending is None
