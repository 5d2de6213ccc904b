"""The FAISS backend against real faiss indexes (no framework): ``nudge_rag.backends.faiss``.

Distance from the index's metric; unsupported index types and memory-mapped indexes refused
before anything is written; rows read and written in place (flat and ``IndexIDMap2``), ids
and labels kept; ``nearest`` against a numpy brute force; write-through to a saved index
file (checked against memory first, stale files refused); the core flow (``WriteBack`` +
``tune_store``) in read and store mode.
"""

from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss", reason="pip install 'nudge-rag[faiss]'")

from nudge_rag import (  # noqa: E402
    MetricMismatchError,
    NudgeM,
    NudgeN,
    StoreTuner,
    UnknownIdError,
    UnsupportedStoreError,
    WriteBack,
    tune_store,
)
from nudge_rag.backends import FaissBackend  # noqa: E402

N_DOCS, DIM = 60, 8
IDS = [f"doc-{k}" for k in range(N_DOCS)]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def docs() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((N_DOCS, DIM)))


def _flat(docs: np.ndarray, metric: str = "ip"):
    index = faiss.IndexFlatIP(DIM) if metric == "ip" else faiss.IndexFlatL2(DIM)
    index.add(docs)
    return index


def _backend(docs: np.ndarray, metric: str = "ip", **kwargs) -> FaissBackend:
    return FaissBackend(_flat(docs, metric), dict(enumerate(IDS)), **kwargs)


def _id_map2(docs: np.ndarray):
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    labels = np.arange(N_DOCS, dtype=np.int64) * 7 + 100  # not positions
    index.add_with_ids(docs, labels)
    return index, {int(label): IDS[k] for k, label in enumerate(labels)}


# ---------------------------------------------------------------------- metric and types
def test_distance_from_the_index_metric(docs):
    assert _backend(docs, "ip").distance == "dot"
    assert _backend(docs, "ip", normalized=True).distance == "cosine"
    assert _backend(docs, "l2").distance == "l2"
    assert FaissBackend(_id_map2(docs)[0]).distance == "dot"
    with pytest.raises(MetricMismatchError, match="metric type .*inner product.*L2"):
        FaissBackend(faiss.IndexFlat(DIM, faiss.METRIC_L1))


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: faiss.IndexHNSWFlat(DIM, 8), "IndexHNSWFlat"),
        (lambda: faiss.IndexIVFPQ(faiss.IndexFlatL2(DIM), DIM, 4, 2, 4), "IndexIVFPQ"),
        (
            lambda: faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlatL2(DIM), DIM, 4, faiss.ScalarQuantizer.QT_8bit
            ),
            "IndexIVFScalarQuantizer",
        ),
        (lambda: faiss.IndexPQ(DIM, 2, 4), "IndexPQ"),
        (lambda: faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit), "IndexScalar"),
        (lambda: faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIM, 8)), "IndexIDMap2 over IndexHNSW"),
        (lambda: faiss.IndexFlat1D(), "IndexFlat1D"),  # a sorted permutation
    ],
)
def test_indexes_that_cannot_be_rewritten_are_refused(make, kind):
    with pytest.raises(UnsupportedStoreError, match=rf"FAISS {kind}.*IndexFlatIP.*IndexIVFFlat"):
        FaissBackend(make())


def test_memory_mapped_index_is_refused(docs, tmp_path):
    faiss.write_index(_flat(docs), str(tmp_path / "index.faiss"))
    index = faiss.read_index(str(tmp_path / "index.faiss"), faiss.IO_FLAG_MMAP_IFC)
    with pytest.raises(UnsupportedStoreError, match="IO_FLAG_MMAP.*without io_flags"):
        FaissBackend(index)


# ---------------------------------------------------------------------- read and write
def test_read_write_in_place(docs):
    index = _flat(docs)
    store = FaissBackend(index, dict(enumerate(IDS)))
    assert store.count() == N_DOCS and store.list_ids() == IDS
    np.testing.assert_array_equal(store.get_vectors(["doc-3", "doc-1"]), docs[[3, 1]])
    with pytest.raises(UnknownIdError, match="nope"):
        store.get_vectors(["doc-1", "nope"])
    new = _unit(np.random.default_rng(5).standard_normal((2, DIM)))
    store.set_vectors(["doc-7", "doc-2"], new)
    assert index.ntotal == N_DOCS  # in place: nothing added or removed
    np.testing.assert_array_equal(index.reconstruct(7), new[0])
    np.testing.assert_array_equal(index.reconstruct(2), new[1])
    untouched = [k for k in range(N_DOCS) if k not in (2, 7)]
    np.testing.assert_array_equal(index.reconstruct_n(0, N_DOCS)[untouched], docs[untouched])
    _, labels = index.search(new[:1], 1)
    assert labels[0, 0] == 7  # the search sees the new vector
    with pytest.raises(ValueError, match="9 dimensions.*holds 8"):
        store.set_vectors(["doc-1"], np.ones((1, 9), dtype=np.float32))
    with pytest.raises(UnknownIdError):
        store.set_vectors(["nope"], new[:1])


def test_cached_l2_norms_follow_the_rows(docs):
    index = _flat(docs, "l2")
    index.sync_l2norms()  # searches then use the cached norms
    store = FaissBackend(index, dict(enumerate(IDS)))
    far = np.full((1, DIM), 3.0, dtype=np.float32)
    store.set_vectors(["doc-5"], far)
    norms = faiss.rev_swig_ptr(index.cached_l2norms.data(), N_DOCS)
    assert norms[5] == pytest.approx(9.0 * DIM)
    np.testing.assert_allclose(np.delete(norms, 5), 1.0, atol=1e-5)
    _, labels = index.search(far, 1)
    assert labels[0, 0] == 5


def test_ids_follow_the_wrappers_map(docs):
    mapping = dict(enumerate(IDS))
    index = _flat(docs)
    store = FaissBackend(index, lambda: mapping)
    assert store.list_ids() == IDS
    index.add(docs[:1])  # a vector the wrapper maps later
    assert store.count() == N_DOCS
    mapping[N_DOCS] = "extra"
    assert store.list_ids()[-1] == "extra"
    positions = FaissBackend(_flat(docs))  # no map: ids are positions, parsed, no map held
    assert positions.list_ids()[:3] == ["0", "1", "2"] and positions.count() == N_DOCS
    np.testing.assert_array_equal(positions.get_vectors(["5", "0"]), docs[[5, 0]])
    for bad in (str(N_DOCS), "-1", "01", "x", "²"):
        with pytest.raises(UnknownIdError, match="positions 0..59"):
            positions.get_vectors(["1", bad])


def test_id_map2_in_place(docs):
    index, mapping = _id_map2(docs)
    store = FaissBackend(index, mapping)
    assert store.list_ids() == IDS
    labels_before = faiss.vector_to_array(index.id_map).copy()
    new = _unit(np.random.default_rng(6).standard_normal((1, DIM)))
    store.set_vectors(["doc-4"], new)
    np.testing.assert_array_equal(faiss.vector_to_array(index.id_map), labels_before)
    np.testing.assert_array_equal(index.reconstruct(4 * 7 + 100), new[0])  # by label (IDMap2)
    _, found = index.search(new, 1)
    assert found[0, 0] == 4 * 7 + 100


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_nearest_matches_brute_force(docs, metric):
    store = _backend(docs, metric)
    queries = _unit(np.random.default_rng(1).standard_normal((5, DIM)))
    for k in (1, 4, N_DOCS + 3):
        got_ids, got = store.nearest(queries, k)
        scores = queries @ docs.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, N_DOCS)]
        assert got.shape == (5, k)
        for q in range(5):
            assert got_ids[q] == [IDS[j] for j in order[q]]
            np.testing.assert_allclose(got[q, : min(k, N_DOCS)], scores[q, order[q]], atol=1e-5)
            assert np.isneginf(got[q, min(k, N_DOCS) :]).all()
    ids, scores = store.nearest(np.zeros((0, DIM), dtype=np.float32), 3)
    assert ids == [] and scores.shape == (0, 3)


def test_nearest_skips_unmapped_labels(docs):
    mapping = {k: IDS[k] for k in range(N_DOCS) if k % 2 == 0}
    store = FaissBackend(_flat(docs), mapping)
    ids, _ = store.nearest(docs[:3], 5)
    assert all(i in mapping.values() for row in ids for i in row)
    assert ids[0][0] == "doc-0"


# ---------------------------------------------------------------------- IVF-Flat
def _ivf(n: int = 400, ids: np.ndarray | None = None):
    vectors = _unit(np.random.default_rng(8).standard_normal((n, DIM)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    if ids is None:
        index.add(vectors)
    else:
        index.add_with_ids(vectors, ids)
    return index, vectors


@pytest.mark.parametrize("labels", ["positions", "user ids"])
def test_ivf_flat_vectors_move_between_lists(tmp_path, labels):
    n = 400
    user = np.arange(n, dtype=np.int64) * 5 + 3 if labels == "user ids" else None
    index, vectors = _ivf(n, user)
    keys = np.arange(n) if user is None else user
    mapping = {int(k): f"doc-{j}" for j, k in enumerate(keys)}
    store = FaissBackend(index, mapping)
    assert store.distance == "dot" and store.count() == n
    assert index.direct_map.type != faiss.DirectMap.NoMap  # added for update_vectors
    np.testing.assert_array_equal(store.get_vectors(["doc-7", "doc-2"]), vectors[[7, 2]])
    # Far from where they were: the list assignment must change with the vector.
    new = -vectors[[10, 11]]
    wb = WriteBack(store, tmp_path / "state", batch_size=1)
    wb.apply(["doc-10", "doc-11"], new)
    assert index.ntotal == n
    np.testing.assert_array_equal(store.get_vectors(["doc-10", "doc-11"]), new)
    index.nprobe = 1  # only the list nearest to the query: found only if the vector moved there
    _, found = index.search(new, 1)
    assert found[:, 0].tolist() == [int(keys[10]), int(keys[11])]
    assert wb.restore() == 2
    np.testing.assert_array_equal(store.get_vectors(["doc-10", "doc-11"]), vectors[[10, 11]])
    _, found = index.search(vectors[[10]], 1)
    assert found[0, 0] == keys[10]


def test_ivf_flat_has_no_write_through(tmp_path):
    index, _ = _ivf()
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    with pytest.raises(ValueError, match="write-through.*flat indexes only"):
        FaissBackend(index, folder=tmp_path)


# ---------------------------------------------------------------------- write-through
@pytest.mark.parametrize("kind", ["flat", "idmap2"])
def test_write_through_updates_the_saved_file(docs, tmp_path, kind):
    if kind == "flat":
        index, mapping = _flat(docs), dict(enumerate(IDS))
    else:
        index, mapping = _id_map2(docs)
    path = tmp_path / "index.faiss"
    faiss.write_index(index, str(path))
    store = FaissBackend(index, mapping, folder=tmp_path)
    assert store.default_state_dir() == tmp_path / "nudge_state"
    new = _unit(np.random.default_rng(7).standard_normal((3, DIM)))
    store.set_vectors(["doc-9", "doc-0", "doc-59"], new)
    saved = faiss.read_index(str(path))  # what a new process loads
    want = docs.copy()
    want[[9, 0, 59]] = new
    if kind == "flat":
        np.testing.assert_array_equal(saved.reconstruct_n(0, N_DOCS), want)
    else:
        inner = faiss.downcast_index(saved.index)
        np.testing.assert_array_equal(inner.reconstruct_n(0, N_DOCS), want)
        np.testing.assert_array_equal(
            faiss.vector_to_array(saved.id_map), faiss.vector_to_array(index.id_map)
        )
    np.testing.assert_array_equal(store.get_vectors(["doc-9"]), new[:1])


def test_write_through_refuses_a_stale_or_missing_file(docs, tmp_path):
    index = _flat(docs)
    with pytest.raises(ValueError, match="does not exist; save the store there first"):
        FaissBackend(index, folder=tmp_path)
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    index.add(docs[:2])  # changed after saving: the file is stale
    with pytest.raises(ValueError, match="does not hold the vectors of this FAISS index"):
        FaissBackend(index, folder=tmp_path)
    other = _flat(docs[::-1].copy())  # same size, other vectors
    with pytest.raises(ValueError, match="does not hold the vectors"):
        FaissBackend(other, folder=tmp_path)
    store = FaissBackend(_flat(docs), folder=tmp_path)
    faiss.write_index(index, str(tmp_path / "index.faiss"))  # saved again, bigger, meanwhile
    with pytest.raises(ValueError, match="changed size since it was checked"):
        store.set_vectors(["1"], docs[:1])
    np.testing.assert_array_equal(store.get_vectors(["1"]), docs[1:2])  # nothing written


def test_memory_mode_warns_once_to_save(docs, caplog):
    store = _backend(docs)
    with caplog.at_level("WARNING", logger="nudge_rag.backends.faiss"):
        store.set_vectors(["doc-1"], docs[2:3])
        store.set_vectors(["doc-2"], docs[3:4])
    warnings = [r for r in caplog.records if "save_local" in r.getMessage()]
    assert len(warnings) == 1
    assert store.default_state_dir() is None


# ---------------------------------------------------------------------- the core flow
def _task(docs: np.ndarray, n_answered: int = 20):
    rng = np.random.default_rng(3)
    queries, answers = [], []
    for k in range(n_answered):
        for _ in range(3):
            q = docs[k] + 0.6 * rng.standard_normal(DIM).astype(np.float32)
            queries.append(q / np.linalg.norm(q))
            answers.append([IDS[k]])
    return np.asarray(queries, dtype=np.float32), answers


def test_tune_store_read_and_store_mode_agree(docs, tmp_path):
    queries, answers = _task(docs)
    results = {}
    for passive in ("read", "store"):
        index = _flat(docs)
        store = FaissBackend(index, dict(enumerate(IDS)))
        wb = WriteBack(store, tmp_path / passive, batch_size=7)
        solver = NudgeN(gamma=None)
        result = tune_store(
            wb, solver, queries[::2], answers[::2], queries[1::2], answers[1::2], passive=passive
        )
        results[passive] = (result.gamma, index.reconstruct_n(0, N_DOCS))
        moved = set(result.changed_ids)
        assert moved and moved <= set(IDS[:20])
        assert wb.restore() == len(moved)
        np.testing.assert_array_equal(index.reconstruct_n(0, N_DOCS), docs)
    assert results["read"][0] == results["store"][0]
    np.testing.assert_allclose(results["read"][1], results["store"][1], atol=1e-6)


def test_metric_mismatch_refused_before_writing(docs, tmp_path):
    index = _flat(docs, "l2")
    tuner = StoreTuner(FaissBackend(index, dict(enumerate(IDS))), state_dir=tmp_path, variant="m")
    queries, answers = _task(docs)
    with pytest.raises(MetricMismatchError, match="NUDGE-M.*scores by l2"):
        tuner.tune_embedded(queries, answers)
    np.testing.assert_array_equal(index.reconstruct_n(0, N_DOCS), docs)
    # NUDGE-M on inner product without normalization is accepted.
    ip = _flat(docs)
    result = StoreTuner(
        FaissBackend(ip, dict(enumerate(IDS))), state_dir=tmp_path / "m", variant=NudgeM(gamma=0.5)
    ).tune_embedded(queries, answers)
    assert result.changed_ids
