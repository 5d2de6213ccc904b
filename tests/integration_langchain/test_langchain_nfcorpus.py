"""End to end on nfcorpus/nudge_split: fit through the retriever, measure nDCG@10, restore.

Every store is made by its harness kind (``tests/stores/test_<store>.py``), holding the
precomputed all-MiniLM-L6-v2 vectors (a lookup double serves them by text, and the
questions' too), so the retriever over the kind's LangChain wrapper must reproduce NudgeN
fitted on the arrays: nDCG@10 on test 0.322 untuned, about 0.451 tuned, 0.322 again after
restore(). Each store also keeps every document's text and metadata, puts its originals
where its users find them, and gives the vectors back; :data:`STORES` says what differs.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, exact_ndcg, query_vectors, ranked_ndcg, split_pairs
from langchain_nudge import NudgeRetriever

from nudge_rag import MetricMismatchError, NudgeM, NudgeN
from nudge_rag.backends import (
    ChromaBackend,
    FaissBackend,
    InMemoryVectorStoreBackend,
    LanceDBBackend,
    MilvusBackend,
    PgVectorBackend,
    QdrantBackend,
)

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from stores.harness import Made, StoreKind, nfcorpus_docs  # noqa: E402
from stores.test_chroma import ChromaKind  # noqa: E402
from stores.test_faiss import FaissKind  # noqa: E402
from stores.test_lancedb import LanceDBKind  # noqa: E402
from stores.test_memory import MemoryKind  # noqa: E402
from stores.test_milvus import MilvusKind  # noqa: E402
from stores.test_pgvector import PgVectorKind  # noqa: E402
from stores.test_qdrant import QdrantKind  # noqa: E402

# end to end on nfcorpus through LangChain stores: 2-30 s each; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

logger = logging.getLogger(__name__)

K = 10


def _chroma_ef_search(made: Made) -> None:
    """ef_search above Chroma's default 100 keeps HNSW close to exact search on 3.6k docs."""
    made.store._collection.modify(configuration={"hnsw": {"ef_search": 400}})


def _faiss_nprobe(made: Made) -> None:
    """16 probes (the kind's 8 lose over 0.02 nDCG untuned on nfcorpus)."""
    made.store.index.nprobe = 16


def _qdrant_rows(made: Made) -> dict[str, tuple[str, dict]]:
    """From the points' payloads (langchain-qdrant's get_by_ids leaves Document.id unset)."""
    points = made.store.client.retrieve(made.collection, made.docs.ids, with_payload=True)
    return {str(p.id): (p.payload["page_content"], p.payload["metadata"]) for p in points}


def _lancedb_rows(made: Made) -> dict[str, tuple[str, dict]]:
    table = made.store.get_table().to_arrow().to_pylist()
    return {r["id"]: (r["text"], r["metadata"]) for r in table}


def _milvus_rows(made: Made) -> dict[str, tuple[str, dict]]:
    ids = made.docs.ids[:3]  # a query of every id takes Milvus Lite seconds
    rows = made.store.client.query(made.collection, ids=ids, output_fields=["text", "row"])
    return {r["pk"]: (r["text"], {"row": r["row"]}) for r in rows}


@dataclass(frozen=True)
class Store:
    """What one store's nfcorpus run makes and expects.

    Attributes:
        kind: the harness kind that makes it; ``config`` its configuration.
        backend: the registry's backend class for the wrapper; ``distance`` its metric.
        state_dir: the originals' folder under ``tmp_path`` (``None``: the store keeps them,
            or only the process does).
        state_dir_arg: the retriever's ``state_dir`` (a path under ``tmp_path``, or
            ``"memory"``) where the store has no folder of its own.
        approximate: its search is approximate: nDCG before may fall short of exact search
            (by under 0.02), and after falls short of the arrays by as much (within 0.01).
        searched: whether every phase searches through the retriever (Milvus Lite answers a
            search in ~0.1 s: the untuned and restored rankings come from the vectors read
            back, exact search as its FLAT index's).
        id_key: the metadata key the wrapper puts the store's id in.
        vectors_atol: how close the stored vectors are to the arrays, loaded and restored.
        no_embedding: the kind loads the stored vectors (``add_embeddings``): nothing embedded.
        prepare: search settings users set after loading.
        restore_slack: how far nDCG after ``restore()`` may be from before (an HNSW graph
            that took two rounds of in-place updates is not the graph it was).
        rows: ``{id: (text, metadata)}`` of every document (default: ``get_by_ids``), or of
            some where reading them all is slow.
    """

    kind: type[StoreKind]
    config: str
    backend: type
    distance: str = "cosine"
    state_dir: str | None = None
    state_dir_arg: str | None = None
    approximate: bool = False
    searched: bool = True
    id_key: str | None = None
    vectors_atol: float = 0.0
    no_embedding: bool = False
    prepare: Callable[[Made], None] | None = None
    restore_slack: float = 0.002
    rows: Callable[[Made], dict[str, tuple[str, dict]]] | None = None


STORES = {
    "memory": Store(MemoryKind, "langchain", InMemoryVectorStoreBackend),
    "chroma": Store(
        ChromaKind,
        "hnsw",
        ChromaBackend,
        state_dir="chroma/nudge_state/contract",
        vectors_atol=1e-7,
        prepare=_chroma_ef_search,
        # measured: restored 0.3188 against 0.3213 before in one run of five (the vectors
        # themselves back to 1e-7); the store contract's bound for an ANN index
        restore_slack=0.005,
    ),
    "qdrant": Store(QdrantKind, "memory", QdrantBackend, vectors_atol=1e-7, rows=_qdrant_rows),
    # A table without an index ranks by l2 whatever ``distance=`` says (that only changes the
    # relevance scores): NUDGE-N is accepted on unit-norm vectors.
    "lancedb": Store(
        LanceDBKind,
        "exact",
        LanceDBBackend,
        distance="l2",
        state_dir="lance/nudge_state/contract",
        rows=_lancedb_rows,
    ),
    "milvus": Store(
        MilvusKind,
        "flat",
        MilvusBackend,
        state_dir="nudge_state/contract",
        searched=False,
        id_key="pk",  # langchain-milvus's primary key; the retriever copies it to Document.id
        vectors_atol=1e-7,
        no_embedding=True,
        rows=_milvus_rows,
    ),
    "pgvector": Store(  # no ANN index: a sequential scan, exact; originals in the database
        PgVectorKind, "exact", PgVectorBackend, vectors_atol=1e-7, no_embedding=True
    ),
    "faiss": Store(  # IndexFlatIP over normalized vectors, saved with save_local
        FaissKind,
        "flat",
        FaissBackend,
        state_dir="faiss/nudge_state",
        state_dir_arg="faiss/nudge_state",
        vectors_atol=1e-7,  # normalize_L2 on unit vectors: 1 ulp here and there
        no_embedding=True,
    ),
    "faiss-ivf": Store(  # IndexIVFFlat as users build it: approximate search
        FaissKind,
        "ivf",
        FaissBackend,
        state_dir_arg="memory",
        approximate=True,
        vectors_atol=1e-7,
        prepare=_faiss_nprobe,
        no_embedding=True,
    ),
}


@pytest.fixture(scope="module")
def corpus(nfcorpus):
    """Texts, ids, embeddings double and the reference scores from the arrays."""
    ds = nfcorpus
    vectors = dict(zip(ds.doc_texts, np.asarray(ds.doc_embeddings), strict=True))
    vectors.update(query_vectors(ds))
    docs = np.asarray(ds.doc_embeddings, dtype=np.float32)
    solver = NudgeN().fit(docs, ds.train.queryset(), ds.dev.queryset())
    return {
        "ds": ds,
        "embeddings": LookupEmbeddings(vectors),
        "untuned": exact_ndcg(ds, docs, K),
        "tuned": exact_ndcg(ds, solver.embeddings_, K),
    }


def _pairs(ds, split_name: str, store_id: dict[str, str]) -> list[tuple[str, str]]:
    """``split_pairs`` naming each document by its id in the store."""
    return [(text, store_id[doc_id]) for text, doc_id in split_pairs(ds, split_name)]


@pytest.mark.parametrize("name", list(STORES))
def test_nfcorpus_end_to_end(name, corpus, tmp_path, request):
    store = STORES[name]
    kind = store.kind()
    kind.skip_if_missing()
    ds = corpus["ds"]
    docs = nfcorpus_docs(ds)
    arrays = docs.vectors.copy()
    made = kind.make(tmp_path, docs, store.config, request)
    request.addfinalizer(made.close)
    made.docs = docs
    ids = list(docs.ids)  # the store's ids (Qdrant's are UUIDs)
    store_id = dict(zip(ds.doc_ids, ids, strict=True))
    row_of = {i: k for k, i in enumerate(ids)}
    if store.prepare is not None:
        store.prepare(made)
    if store.no_embedding:  # loaded with the stored vectors, not re-embedded
        assert made.store.embeddings.document_calls == 0

    kwargs = {}
    if store.state_dir_arg is not None:
        arg = store.state_dir_arg
        kwargs["state_dir"] = arg if arg == "memory" else tmp_path / arg
    retriever = NudgeRetriever(vectorstore=made.store, k=K, **kwargs)
    backend = retriever.store
    assert isinstance(backend, store.backend)
    assert backend.distance == store.distance
    expected_state = None if store.state_dir is None else (tmp_path / store.state_dir).resolve()
    got_state = retriever.writeback.state_dir
    assert (got_state if got_state is None else Path(got_state).resolve()) == expected_state
    with pytest.raises(MetricMismatchError, match="dot product"):  # before anything is written
        NudgeRetriever(vectorstore=made.store, variant="m").fit(_pairs(ds, "train", store_id)[:20])

    def rows() -> dict[str, tuple[str, dict]]:
        if store.rows is not None:
            return store.rows(made)
        return {d.id: (d.page_content, d.metadata) for d in made.store.get_by_ids(ids)}

    def ndcg(searched: bool = True) -> float:
        if not searched:  # exact search over the vectors read back
            return exact_ndcg(ds, backend.get_vectors(ids), K)
        ranked = []
        for hits in retriever.batch(list(ds.test.query_texts), k=K):
            assert len(hits) == K, "a query got fewer than k results"
            for d in hits:  # the right id on each document, its text and metadata kept
                k = row_of[d.id]
                assert (d.page_content, d.metadata["row"]) == (docs.texts[k], k)
                if store.id_key is not None:
                    assert d.id == d.metadata[store.id_key]
            ranked.append([ds.doc_ids[row_of[d.id]] for d in hits])
        return ranked_ndcg(ds, ranked, K)

    stored = rows()
    assert stored and {i: (t, m["row"]) for i, (t, m) in stored.items()} == {
        i: (docs.texts[row_of[i]], row_of[i]) for i in stored
    }
    loaded = backend.get_vectors(ids)
    np.testing.assert_allclose(loaded, arrays, rtol=0, atol=store.vectors_atol)
    before = ndcg(store.searched)
    retriever.fit(_pairs(ds, "train", store_id), val_pairs=_pairs(ds, "dev", store_id))
    moved = retriever.tune_result.changed_ids
    after = ndcg()
    assert rows() == stored
    assert retriever.restore() == len(moved)
    restored = ndcg(store.searched)
    logger.warning(
        "LangChain %s[%s] nDCG@10: before %.4f, after %.4f (arrays %.4f), restored %.4f",
        kind.name,
        store.config,
        before,
        after,
        corpus["tuned"],
        restored,
    )
    if store.approximate:
        lost = corpus["untuned"] - before  # what the approximate search loses untuned
        assert 0 <= lost < 0.02
        assert after == pytest.approx(corpus["tuned"] - lost, abs=0.01)
    else:
        assert before == pytest.approx(corpus["untuned"], abs=0.002)
        assert after >= 0.44
        assert after == pytest.approx(corpus["tuned"], abs=0.005)
    assert restored == pytest.approx(before, abs=store.restore_slack)
    np.testing.assert_allclose(backend.get_vectors(ids), loaded, rtol=0, atol=kind.restore_atol)
    np.testing.assert_allclose(backend.get_vectors(ids), arrays, rtol=0, atol=store.vectors_atol)
    assert rows() == stored


@pytest.mark.parametrize(("variant", "floor"), [("n", 0.448), ("m", 0.423)])
def test_one_set_of_pairs_cross_validates(corpus, variant, floor):
    """``fit(train pairs)`` with no validation pairs: repeated 10-fold CV, then a fit on
    every pair (issue targets: NUDGE-N >= 44.8, NUDGE-M >= 42.3).

    Measured: NUDGE-N 45.4 at the default seed (45.4, 45.4, 45.4, 45.1 at seeds 1-4);
    NUDGE-M 44.2 on the arrays. ``benchmarks/one_set_of_pairs.py --frameworks`` prints all.
    """
    ds = corpus["ds"]
    ids = list(ds.doc_ids)
    if variant == "m":  # InMemoryVectorStore scores by cosine: NUDGE-M is judged on the arrays
        solver = NudgeM().fit(np.asarray(ds.doc_embeddings, dtype=np.float32), ds.train.queryset())
        after = exact_ndcg(ds, solver.embeddings_, K)
        method = solver.gamma_chosen_by_
    else:
        store = InMemoryVectorStore(LookupEmbeddings(corpus["embeddings"].vectors, as_arrays=True))
        store.add_texts(ds.doc_texts, ids=ids)
        retriever = NudgeRetriever(vectorstore=store, k=K)
        retriever.fit(split_pairs(ds, "train"))
        results = retriever.batch(list(ds.test.query_texts), config={"max_concurrency": 4}, k=K)
        after = ranked_ndcg(ds, [[d.id for d in docs] for docs in results], K)
        method = retriever.tune_result.method
        assert retriever.tune_result.n_folds == 10
        assert retriever.tune_result.solver.n_cv_repeats_ == 3
    logger.warning("NUDGE-%s, train pairs only: nDCG@10 %.4f (%s)", variant.upper(), after, method)
    assert method == "cv"
    assert after >= floor
