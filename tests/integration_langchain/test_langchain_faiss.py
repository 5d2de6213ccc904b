"""LangChain's ``FAISS`` (langchain-community) through ``NudgeRetriever``.

Toy store: the registry's backend and its metric (inner product, L2, ``normalize_L2``),
NUDGE-M refused on L2, an HNSW index refused before anything is written, an IndexIVFFlat
store (vectors move between lists), fit / save_local / load_local / restore in a new store
object with text and metadata kept, write-through to the saved folder. nfcorpus end to end
(flat and IVF-Flat): ``test_langchain_nfcorpus.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("faiss", reason="pip install 'nudge-rag[faiss]'")
pytest.importorskip("langchain_community", reason="pip install 'nudge-rag[faiss]' (or [lancedb])")
pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")


import faiss  # noqa: E402
import numpy as np
from langchain_community.docstore.in_memory import InMemoryDocstore  # noqa: E402
from langchain_community.vectorstores import FAISS  # noqa: E402
from langchain_community.vectorstores.utils import DistanceStrategy  # noqa: E402
from langchain_helpers import (  # noqa: E402
    LookupEmbeddings,
    toy_vectors,
)
from langchain_nudge import NudgeRetriever  # noqa: E402

from nudge_rag import (  # noqa: E402
    MetricMismatchError,
    UnsupportedStoreError,
    backend_for,
)
from nudge_rag.backends import FaissBackend  # noqa: E402
from nudge_rag.backends.faiss import from_langchain  # noqa: E402

N_DOCS = 12
TEXTS = [f"document {k} is about topic {k}" for k in range(N_DOCS)]
IDS = [f"doc-{k}" for k in range(N_DOCS)]
QUESTIONS = [f"what is document {k} about, take {j}?" for k in range(N_DOCS) for j in range(2)]
GAMMA = 0.3


@pytest.fixture(scope="module")
def toy():
    """Unit vectors for the documents; each question near its document."""
    docs = toy_vectors(TEXTS, dim=8, seed=0)
    rng = np.random.default_rng(1)
    table = dict(docs)
    for k, text in enumerate(TEXTS):
        for j in range(2):
            q = docs[text] + 0.5 * rng.standard_normal(8)
            table[QUESTIONS[2 * k + j]] = q / np.linalg.norm(q)
    return table


def _store(toy, **kwargs) -> FAISS:
    return FAISS.from_embeddings(
        [(t, toy[t].tolist()) for t in TEXTS],
        LookupEmbeddings(toy),
        metadatas=[{"i": k, "tag": f"t{k}"} for k in range(N_DOCS)],
        ids=IDS,
        **kwargs,
    )


def _pairs(n: int = 6) -> list[tuple[str, str]]:
    return [(QUESTIONS[2 * k + j], IDS[k]) for k in range(n) for j in range(2)]


def _vectors(store: FAISS) -> np.ndarray:
    return store.index.reconstruct_n(0, store.index.ntotal)


def _check_docs(store: FAISS) -> None:
    docs = store.get_by_ids(IDS)
    assert [d.page_content for d in docs] == TEXTS
    assert [d.metadata for d in docs] == [{"i": k, "tag": f"t{k}"} for k in range(N_DOCS)]


# ---------------------------------------------------------------------- registry, metric
def test_registry_and_metric(toy):
    ip = backend_for(_store(toy, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT))
    assert isinstance(ip, FaissBackend) and ip.distance == "dot"
    assert ip.list_ids() == IDS and ip.default_state_dir() is None
    assert backend_for(_store(toy)).distance == "l2"  # LangChain's default: IndexFlatL2
    normalized = _store(toy, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    normalized._normalize_L2 = True
    assert backend_for(normalized).distance == "cosine"


def test_nudge_m_on_l2_is_refused_before_writing(toy, tmp_path):
    store = _store(toy)
    before = _vectors(store)
    retriever = NudgeRetriever(vectorstore=store, variant="m", state_dir=tmp_path / "state")
    with pytest.raises(MetricMismatchError, match="NUDGE-M.*l2"):
        retriever.fit(_pairs())
    np.testing.assert_array_equal(_vectors(store), before)


def test_hnsw_index_is_refused(toy, tmp_path):
    store = FAISS(
        LookupEmbeddings(toy),
        faiss.IndexHNSWFlat(8, 16),
        InMemoryDocstore(),
        {},
    )
    store.add_embeddings([(t, toy[t].tolist()) for t in TEXTS], ids=IDS)
    retriever = NudgeRetriever(vectorstore=store, state_dir=tmp_path / "state")
    with pytest.raises(UnsupportedStoreError, match="IndexHNSWFlat.*IndexFlatIP"):
        retriever.fit(_pairs())
    assert not (tmp_path / "state" / "originals.npz").exists()


def test_ivf_flat_store(toy, tmp_path):
    """An IndexIVFFlat store is tuned with update_vectors (lists follow the vectors)."""
    docs = np.stack([toy[t] for t in TEXTS]).astype(np.float32)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 2, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # 12 training points: no warning
    index.train(docs)
    index.nprobe = 2
    store = FAISS(LookupEmbeddings(toy), index, InMemoryDocstore(), {})
    store.add_embeddings(
        [(t, toy[t].tolist()) for t in TEXTS],
        metadatas=[{"i": k, "tag": f"t{k}"} for k in range(N_DOCS)],
        ids=IDS,
    )
    retriever = NudgeRetriever(
        vectorstore=store, state_dir=tmp_path / "state", solver_params={"gamma": GAMMA}
    )
    retriever.fit(_pairs())
    changed = retriever.tune_result.changed_ids
    assert sorted(changed) == sorted(IDS[:6])
    tuned = index.reconstruct_batch(np.arange(N_DOCS))
    assert not np.array_equal(tuned[:6], docs[:6])
    np.testing.assert_array_equal(tuned[6:], docs[6:])
    assert retriever.invoke(QUESTIONS[0], k=1)[0].id == "doc-0"
    assert retriever.restore() == 6
    np.testing.assert_array_equal(index.reconstruct_batch(np.arange(N_DOCS)), docs)
    _check_docs(store)


# ---------------------------------------------------------------------- fit, save, restore
def test_fit_save_load_restore(toy, tmp_path):
    folder = tmp_path / "faiss"
    store = _store(toy, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    store.save_local(str(folder))
    original = _vectors(store)
    retriever = NudgeRetriever(
        vectorstore=store, k=3, state_dir=folder / "nudge_state", solver_params={"gamma": GAMMA}
    )
    retriever.fit(_pairs())
    changed = retriever.tune_result.changed_ids
    assert sorted(changed) == sorted(IDS[:6])
    tuned = _vectors(store)
    moved = ~np.all(tuned == original, axis=1)
    assert sorted(np.asarray(IDS)[moved].tolist()) == sorted(changed)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    _check_docs(store)
    assert retriever.invoke(QUESTIONS[0], k=1)[0].id == "doc-0"
    store.save_local(str(folder))  # the user's save after fit

    # A new process: load the folder, the tuned vectors are there; restore from the state.
    loaded = FAISS.load_local(
        str(folder),
        LookupEmbeddings(toy),
        allow_dangerous_deserialization=True,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )
    np.testing.assert_array_equal(_vectors(loaded), tuned)
    again = NudgeRetriever(vectorstore=loaded, state_dir=folder / "nudge_state")
    assert again.restore() == len(changed)
    np.testing.assert_array_equal(_vectors(loaded), original)
    _check_docs(loaded)


def test_write_through_folder(toy, tmp_path):
    folder = tmp_path / "faiss"
    store = _store(toy, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    store.save_local(str(folder))
    original = _vectors(store)
    retriever = NudgeRetriever(
        vectorstore=store,
        embedding_store=from_langchain(store, folder=folder),
        solver_params={"gamma": GAMMA},
        batch_size=4,
    )
    assert retriever.writeback.state_dir == folder / "nudge_state"
    retriever.fit(_pairs())
    tuned = _vectors(store)
    # No save_local: the saved folder already holds the tuned vectors.
    loaded = FAISS.load_local(
        str(folder), LookupEmbeddings(toy), allow_dangerous_deserialization=True
    )
    np.testing.assert_array_equal(_vectors(loaded), tuned)
    _check_docs(loaded)
    retriever.restore()
    loaded = FAISS.load_local(
        str(folder), LookupEmbeddings(toy), allow_dangerous_deserialization=True
    )
    np.testing.assert_array_equal(_vectors(loaded), original)
