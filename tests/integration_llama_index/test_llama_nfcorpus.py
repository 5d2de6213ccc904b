"""LlamaIndex's stores through ``NudgeFinetuneEngine``, end to end on nfcorpus, one store a case.

Each store is made by its harness kind (``tests/stores``, configuration ``llama-index``):
nodes with their stored MiniLM vectors (nothing embedded) added by ``VectorStoreIndex`` to an
exact search. LanceDB's ``LanceDBVectorStore``: a table without an ANN index (one
``create_table`` with every row; it ranks by l2, which ranks like cosine on these unit-norm
vectors). Milvus Lite's ``MilvusVectorStore``: a ``FLAT`` COSINE collection. pgvector's
``PGVectorStore``: a table with no HNSW index (a sequential scan; LlamaIndex ranks by cosine).
FAISS's ``FaissVectorStore``: an ``IndexFlatIP``, persisted (its ids are positions: the
engine maps them to node ids through the index).

Train pairs with dev pairs for validation, ``index.as_retriever`` on the test queries: nDCG@10
before (within 0.002 of exact search on the arrays), after (within 0.005 of ``NudgeN`` on the
arrays) and after restore (within 0.002 of before); originals back (exactly, or to float32
rounding), text and metadata kept, the originals where the store keeps them. Milvus Lite
answers a search in ~0.1 s here, so its untuned and restored rankings are computed exactly
from the vectors read back; pgvector's retriever runs 4 queries at once (each a 30 ms scan).
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_helpers import LookupEmbedding, exact_ndcg, query_vectors, ranked_ndcg, split_pairs
from llama_index_nudge import NudgeFinetuneEngine
from stores.harness import Docs, Made, StoreKind, nfcorpus_docs
from stores.test_faiss import FaissKind
from stores.test_lancedb import LanceDBKind
from stores.test_milvus import MilvusKind
from stores.test_pgvector import PgVectorKind

from nudge_rag import NudgeN
from nudge_rag.backends import FaissBackend, LanceDBBackend, MilvusBackend, PgVectorBackend

logger = logging.getLogger(__name__)
K = 10


# ---------------------------------------------------------------------- per store
def _pg_columns(made: Made, docs: Docs) -> list[tuple]:
    """Every node as the store returns it is the document it was given; the snapshot is
    every row's non-vector columns as stored (key, node id, text, metadata), in key order."""
    import psycopg

    got = {n.node_id: (n.get_content(), n.metadata) for n in made.store.get_nodes(docs.ids)}
    assert got == dict(zip(docs.ids, zip(docs.texts, docs.metadatas, strict=True), strict=True))
    table = f'"{made.store.schema_name}"."data_{made.store.table_name}"'
    with psycopg.connect(made.uri) as conn:
        query = f"SELECT id, node_id, text, metadata_::text FROM {table} ORDER BY id"
        return conn.execute(query).fetchall()


def _milvus_fields(made: Made, docs: Docs) -> dict:
    """The text and ``row`` fields Milvus holds for the first two documents."""
    got = made.store.client.query(made.collection, ids=docs.ids[:2], output_fields=["text", "row"])
    snapshot = {r["id"]: (r["text"], r["row"]) for r in got}
    assert snapshot == {docs.ids[k]: (docs.texts[k], k) for k in range(2)}
    return snapshot


def _faiss_docstore(made: Made, docs: Docs) -> str:
    """The text of the first node in the index's docstore (FAISS holds vectors only)."""
    text = made.index.docstore.get_node(docs.ids[0]).text
    assert text == docs.texts[0]
    return text


def _faiss_vectors(made: Made, ids: list[str]) -> np.ndarray:
    """The FAISS index's own rows, by position (positions are the nodes' insertion order)."""
    client = made.store.client
    return client.reconstruct_n(0, client.ntotal)


@dataclass(frozen=True)
class Case:
    """What one store's test expects.

    Attributes:
        kind: the harness kind that makes the store.
        modules: what it needs installed (a skip names the kind's extra where missing).
        backend, distance: the backend class ``from_index`` picks, and its distance.
        state: the state folder under ``tmp_path`` (``None``: the store keeps the originals).
        persist_dir: the engine gets the index's persist folder (FAISS: ``faiss:PATH``).
        exact_untuned: untuned and restored rankings from the vectors read back (slow search).
        concurrency: queries the retriever runs at once (``aretrieve``; 1: ``retrieve``).
        atol: how close the originals come back.
        vectors: reads the stored vectors (default: the backend's ``get_vectors``).
        kept: checks the store's own text and metadata and returns a snapshot that finetune
            and restore must leave as it was.
    """

    kind: type[StoreKind]
    modules: tuple[str, ...]
    backend: type
    distance: str
    state: str | None
    persist_dir: bool = False
    exact_untuned: bool = False
    concurrency: int = 1
    atol: float = 0.0
    vectors: Callable[[Made, list[str]], np.ndarray] | None = None
    kept: Callable[[Made, Docs], Any] | None = None


CASES = {
    "lancedb": Case(
        LanceDBKind,
        ("llama_index.vector_stores.lancedb",),
        LanceDBBackend,
        "l2",
        "lance/nudge_state/contract",
    ),
    "milvus": Case(
        MilvusKind,
        ("llama_index.vector_stores.milvus", "milvus_lite"),
        MilvusBackend,
        "cosine",
        "nudge_state/contract",  # next to the .db file
        exact_untuned=True,
        atol=1e-7,
        kept=_milvus_fields,
    ),
    "pgvector": Case(
        PgVectorKind,
        ("llama_index.vector_stores.postgres", "psycopg"),
        PgVectorBackend,
        "cosine",
        None,  # side tables of the same database
        concurrency=4,
        atol=1e-7,
        kept=_pg_columns,
    ),
    "faiss": Case(
        FaissKind,
        ("faiss", "llama_index.vector_stores.faiss"),
        FaissBackend,
        "dot",
        "faiss_llama/nudge_state",
        persist_dir=True,
        vectors=_faiss_vectors,
        kept=_faiss_docstore,
    ),
}


def _retrieve_all(retriever, queries: list[str], concurrency: int) -> list[list[str]]:
    """Node ids per query: ``retrieve`` one by one, or ``aretrieve`` ``concurrency`` at once."""
    if concurrency == 1:
        return [[n.node.node_id for n in retriever.retrieve(text)] for text in queries]

    async def run() -> list:
        gate = asyncio.Semaphore(concurrency)

        async def one(text: str) -> list[str]:
            async with gate:
                return [n.node.node_id for n in await retriever.aretrieve(text)]

        return await asyncio.gather(*(one(text) for text in queries))

    return asyncio.run(run())


# ---------------------------------------------------------------------- the test
@pytest.mark.slow  # end to end on nfcorpus: 5-40 s a store
@pytest.mark.parametrize("name", list(CASES))
def test_nfcorpus_end_to_end(name, nfcorpus, tmp_path, request):
    case = CASES[name]
    kind = case.kind()
    for module in case.modules:
        pytest.importorskip(module, reason=f"pip install 'nudge-rag[{kind.extra}]'")
    ds = nfcorpus
    docs = nfcorpus_docs(ds)
    vectors, ids = docs.vectors, list(docs.ids)
    tuned = exact_ndcg(
        ds, NudgeN().fit(vectors, ds.train.queryset(), ds.dev.queryset()).embeddings_
    )

    made = kind.make(tmp_path, docs, "llama-index", request)
    request.addfinalizer(made.close)
    index = made.index
    embed = LookupEmbedding(query_vectors(ds))  # the index's own is a MockEmbedding
    extra = {"persist_dir": made.uri.removeprefix("faiss:")} if case.persist_dir else {}
    engine = NudgeFinetuneEngine.from_index(
        index,
        train_pairs=split_pairs(ds, "train"),
        val_pairs=split_pairs(ds, "dev"),
        embed_model=embed,
        **extra,
    )
    backend = engine.store
    assert isinstance(backend, case.backend)
    assert backend.distance == case.distance

    def stored() -> np.ndarray:
        return backend.get_vectors(ids) if case.vectors is None else case.vectors(made, ids)

    np.testing.assert_array_equal(stored(), vectors)
    kept = case.kept(made, docs) if case.kept else None
    retriever = index.as_retriever(similarity_top_k=K, embed_model=embed)
    queries = list(ds.test.query_texts)

    def ndcg(exact: bool = False) -> float:
        if exact:
            return exact_ndcg(ds, backend.get_vectors(ids))
        return ranked_ndcg(ds, _retrieve_all(retriever, queries, case.concurrency), K)

    def top_hit_is_kept(query: str) -> None:
        hit = retriever.retrieve(query)[0].node
        row = ids.index(hit.node_id)
        assert (hit.get_content(), hit.metadata) == (docs.texts[row], docs.metadatas[row])

    before = ndcg(case.exact_untuned)
    moved = engine.finetune().changed_ids
    if case.state is None:
        assert engine.state_dir is None
    else:
        assert engine.state_dir.resolve() == (tmp_path / case.state).resolve()
    after = ndcg()
    top_hit_is_kept(queries[0])
    if case.kept:
        assert case.kept(made, docs) == kept
    assert engine.restore() == len(moved)
    restored = ndcg(case.exact_untuned)
    logger.warning(
        "LlamaIndex %s (exact) nDCG@10: before %.4f, after %.4f (arrays %.4f), restored %.4f",
        type(made.store).__name__,
        before,
        after,
        tuned,
        restored,
    )
    assert before == pytest.approx(exact_ndcg(ds, vectors), abs=0.002)
    assert after == pytest.approx(tuned, abs=0.005)
    assert restored == pytest.approx(before, abs=0.002)
    np.testing.assert_allclose(stored(), vectors, rtol=0, atol=case.atol)
    if case.kept:
        assert case.kept(made, docs) == kept
    top_hit_is_kept(queries[1])
